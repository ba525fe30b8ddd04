"""Perplexity evaluation of base, fine-tuned and GGUF models, with a promotion gate."""
