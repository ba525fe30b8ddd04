"""LLM predictor: GGUF models on CPU with llama.cpp, OpenAI-compatible and KServe V1/V2."""
