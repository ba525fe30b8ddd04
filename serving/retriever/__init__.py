"""Retriever predictor: top-k chunks from a FAISS index over the embedding store."""
