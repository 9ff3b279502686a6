"""Reranking methods, one module each, behind one `Reranker.score(query, documents)` interface.

`build_reranker(method, ...)` is the one way in; `METHODS` lists the valid names. LLM methods
share a loaded `CausalLM` when given one, so several methods over one model cost one model load.
"""

from __future__ import annotations

from models.llm.loading import DEFAULT_RERANK_LLM, CausalLM, load_causal_lm
from models.rerankers.base import Reranker, order_by_score, scores_from_order
from models.rerankers.embedding import EmbeddingReranker, Encode

LLM_METHODS = ("pointwise", "graded", "listwise", "first", "pairwise")
METHODS = (*LLM_METHODS, "embedding", "cross-encoder")


def build_reranker(method: str, *, model: str | None = None, lm: CausalLM | None = None,
                   encode: Encode | None = None, device: str = "auto", dtype: str = "auto",
                   engine: str = "auto", attn_implementation: str | None = None,
                   **options: object) -> Reranker:
    """A reranker for `method`; `options` go to the method's constructor (window, step, ...).

    LLM methods use `lm` if given, else load `model` (default: the shipped SmolLM2 GGUF). The
    embedding method needs `encode`; the cross-encoder method needs `model`.
    """
    if method in LLM_METHODS:
        from models.rerankers.first import FirstTokenReranker
        from models.rerankers.graded import GradedReranker
        from models.rerankers.listwise import ListwiseReranker
        from models.rerankers.pairwise import PairwiseReranker
        from models.rerankers.pointwise import PointwiseReranker

        if lm is None:
            lm = load_causal_lm(model or DEFAULT_RERANK_LLM, device=device, dtype=dtype,
                                attn_implementation=attn_implementation)
        if method == "listwise":  # generation, not the hidden-state engine
            return ListwiseReranker(lm, **options)  # type: ignore[arg-type]
        cls = {"pointwise": PointwiseReranker, "graded": GradedReranker, "first": FirstTokenReranker,
               "pairwise": PairwiseReranker}[method]
        return cls(lm, engine=engine, **options)  # type: ignore[arg-type]
    if method == "embedding":
        if encode is None:
            raise ValueError("the embedding method needs an `encode` function")
        return EmbeddingReranker(encode, model_name=model or "embedding", **options)  # type: ignore[arg-type]
    if method == "cross-encoder":
        if not model:
            raise ValueError("the cross-encoder method needs a model name or path")
        from models.rerankers.cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(model, device=device, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown rerank method {method!r}; valid methods: {', '.join(METHODS)}")


__all__ = ["METHODS", "LLM_METHODS", "Reranker", "EmbeddingReranker", "build_reranker", "order_by_score",
           "scores_from_order"]
