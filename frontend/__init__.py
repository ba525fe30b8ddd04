"""Chainlit RAG chat."""
