"""Fused similarity + top-k for exact search: Triton kernel, references, dispatcher."""

from kernels.topk.dispatch import similarity_topk

__all__ = ["similarity_topk"]
