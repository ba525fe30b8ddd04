"""Publish GGUF models to the model store and the model catalog."""
