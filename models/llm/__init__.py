"""Causal-LM loading and last-position hidden-state engines for the LLM rerankers."""
