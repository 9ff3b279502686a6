"""Dual-encoder embedders, one module per runtime."""

from models.embedder.torch import SentenceTransformerEmbedder, TokenizedText, load_embedder, load_space_embedder

__all__ = ["SentenceTransformerEmbedder", "TokenizedText", "load_embedder", "load_space_embedder"]
