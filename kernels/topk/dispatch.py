"""Exact inner-product top-k: the fused Triton kernel on CUDA, the chunked matmul path elsewhere."""

from __future__ import annotations

from typing import Literal

import torch

from kernels.attention.dispatch import triton_usable
from kernels.topk.reference import similarity_topk_chunked, similarity_topk_reference

TopkBackend = Literal["auto", "triton", "matmul", "reference"]

TRITON_MAX_K = 256  # mirrors similarity_topk_fwd.MAX_K without importing triton on CPU


def similarity_topk(queries: torch.Tensor, corpus: torch.Tensor, k: int,
                    backend: TopkBackend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k corpus rows by inner product for each query: (scores (q, k), ids int64 (q, k)), best first.

    `queries` (q, d) and `corpus` (n, d) share device and dtype; k is clipped to n. Scores come back
    in float32 for the Triton path and in the inputs' dtype otherwise.
    """
    if queries.dim() != 2 or corpus.dim() != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError("queries (q, d) and corpus (n, d) must share d: "
                         f"{tuple(queries.shape)}, {tuple(corpus.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if corpus.shape[0] == 0:
        raise ValueError("corpus is empty")
    k = min(k, corpus.shape[0])
    if queries.shape[0] == 0:
        empty = torch.empty(0, k, device=queries.device)
        return empty.to(queries.dtype), empty.to(torch.int64)
    if backend == "auto":
        # Measured on an H100 (docs/BENCHMARKS.md): the fused kernel wins with half-precision
        # inputs (tensor cores); for fp32, cuBLAS's matmul + topk beats Triton's exact fp32 dot.
        on_gpu = queries.is_cuda and triton_usable(queries.device)
        halves = queries.dtype in (torch.float16, torch.bfloat16) and queries.dtype == corpus.dtype
        backend = "triton" if on_gpu and halves and k <= TRITON_MAX_K else "matmul"
    if backend == "triton":
        from kernels.topk.similarity_topk_fwd import similarity_topk_triton

        return similarity_topk_triton(queries, corpus, k)
    if backend == "reference":
        return similarity_topk_reference(queries, corpus, k)
    return similarity_topk_chunked(queries, corpus, k)
