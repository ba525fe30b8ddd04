"""Data component: load ShareGPT / HF-chat / FineTome conversations, standardize to ``messages``, split, tokenize."""
