"""Fused inner-product similarity + top-k for exact search (Triton).

The online-softmax idea applied to search: a program owns BLOCK_Q queries and one slice of the
corpus, computes their scores tile by tile (BLOCK_N corpus rows at a time, `tl.dot` over head-dim
chunks) and folds each tile into a running top-K_PAD per query held in registers; the
(queries x corpus) score matrix never exists in memory. Each (query block, corpus slice) writes
K_PAD candidates; the wrapper merges the slices' candidates with one small `torch.topk`.

A score and its corpus id travel together as one int64 sort key: the high 32 bits are the fp32
score mapped to an order-preserving int32, the low 32 bits are (2^31 - 1 - id) so that equal
scores prefer the lower id. Sorting keys sorts (score, -id) pairs with one bitonic network.
A tile is folded in only when one of its scores beats some query's current K-th best, which after
the first tiles is rare: most tiles cost only their dot product and a max.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

MAX_K = 256  # K_PAD beyond this spills registers; larger k goes to the matmul path


def _configs() -> list[triton.Config]:
    if _INTERPRET:
        return [triton.Config({"BLOCK_Q": 16, "BLOCK_D": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_Q": q, "BLOCK_D": d}, num_warps=w, num_stages=s)
        for q, d, w, s in [(64, 64, 4, 3), (32, 64, 4, 3)]
    ]


@triton.jit
def _score_to_key(scores, ids):
    """Pack (fp32 score, int32 id) into an int64 whose signed order is (score, -id) order."""
    bits = scores.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits
    return (ordered.to(tl.int64) << 32) | (0x7FFFFFFF - ids).to(tl.int64)


@triton.jit
def _leading(x, WIDTH: tl.constexpr):
    """x[:, :WIDTH] of a (rows, cols) int64 tensor; Triton has no slicing, so select chunk 0 and sum."""
    ROWS: tl.constexpr = x.shape[0]
    CHUNKS: tl.constexpr = x.shape[1] // WIDTH
    if CHUNKS == 1:
        return x
    chunks = tl.reshape(x, (ROWS, CHUNKS, WIDTH))
    first = tl.arange(0, CHUNKS)[None, :, None] == 0
    return tl.sum(tl.where(first, chunks, 0), axis=1)


@triton.autotune(configs=_configs(), key=["DIM", "K_PAD", "BLOCK_N", "DOT_PRECISION"])
@triton.jit
def _similarity_topk_fwd(
    Qp, C, OutKeys,
    num_queries, num_docs, docs_per_split,
    stride_q, stride_c, stride_o_q, stride_o_split,
    DIM: tl.constexpr, K_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = offs_q < num_queries
    doc_lo = split * docs_per_split
    doc_hi = tl.minimum(doc_lo + docs_per_split, num_docs)

    floor_key = tl.full([BLOCK_Q, K_PAD], -9223372036854775807 - 1, dtype=tl.int64)
    best = floor_key  # running top-K_PAD keys per query, sorted descending
    threshold = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)  # K-th best score so far

    for start_n in range(doc_lo, doc_hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < doc_hi
        scores = tl.zeros([BLOCK_Q, BLOCK_N], dtype=tl.float32)
        for d0 in range(0, DIM, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < DIM
            q = tl.load(Qp + offs_q[:, None].to(tl.int64) * stride_q + offs_d[None, :],
                        mask=q_ok[:, None] & d_ok[None, :], other=0.0)
            ct = tl.load(C + offs_n[None, :].to(tl.int64) * stride_c + offs_d[:, None],
                         mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            scores = tl.dot(q, ct, scores, input_precision=DOT_PRECISION)
        scores = tl.where(n_ok[None, :], scores, float("-inf"))
        # Fold the tile in only if it can change some query's top-K.
        if tl.max(tl.max(scores, 1) - threshold, 0) >= 0:
            keys = _score_to_key(scores, offs_n)
            keys = tl.where(n_ok[None, :], keys, -9223372036854775807 - 1)
            tile_best = _leading(tl.sort(keys, dim=1, descending=True), K_PAD)
            # Any interleaving of the two candidate lists will do: the sort orders them.
            candidates = tl.reshape(tl.join(best, tile_best), (BLOCK_Q, 2 * K_PAD))
            merged = tl.sort(candidates, dim=1, descending=True)
            best = _leading(merged, K_PAD)
            kth = tl.min(best, 1) >> 32
            kth_bits = (kth ^ ((kth >> 31) & 0x7FFFFFFF)).to(tl.int32)
            threshold = tl.where(kth == (-2147483648), float("-inf"), kth_bits.to(tl.float32, bitcast=True))

    offs_k = tl.arange(0, K_PAD)
    o_ptrs = OutKeys + offs_q[:, None].to(tl.int64) * stride_o_q + split * stride_o_split + offs_k[None, :]
    tl.store(o_ptrs, best, mask=q_ok[:, None])


def _keys_to_scores_ids(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ordered = (keys >> 32).to(torch.int32)
    bits = ordered ^ ((ordered >> 31) & 0x7FFFFFFF)
    scores = bits.view(torch.float32)
    ids = 0x7FFFFFFF - (keys & 0xFFFFFFFF)
    return scores, ids


def similarity_topk_triton(queries: torch.Tensor, corpus: torch.Tensor,
                           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of each query over the corpus: (scores float32 (q, k), ids int64 (q, k))."""
    if queries.dim() != 2 or corpus.dim() != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError("queries (q, d) and corpus (n, d) must share d: "
                         f"{tuple(queries.shape)}, {tuple(corpus.shape)}")
    if queries.dtype != corpus.dtype:
        raise ValueError("queries and corpus must have the same dtype")
    num_queries, dim = queries.shape
    num_docs = corpus.shape[0]
    if not 1 <= k <= min(num_docs, MAX_K):
        raise ValueError(f"k must be in 1..min(corpus size, {MAX_K}), got {k}")
    if num_docs >= 2**31 - 1:
        raise ValueError("corpus ids must fit in int32")
    queries = queries.contiguous()
    corpus = corpus.contiguous()
    k_pad = max(triton.next_power_of_2(k), 16)
    block_n = max(k_pad, 64)
    # Enough corpus slices to fill the machine when the query batch is small.
    if queries.is_cuda:
        sms = torch.cuda.get_device_properties(queries.device).multi_processor_count
        q_blocks = triton.cdiv(num_queries, 32)
        splits = max(1, min(triton.cdiv(2 * sms, q_blocks), triton.cdiv(num_docs, 4 * block_n)))
    else:
        splits = max(1, min(4, triton.cdiv(num_docs, 4 * block_n)))
    docs_per_split = triton.cdiv(triton.cdiv(num_docs, splits), block_n) * block_n
    splits = triton.cdiv(num_docs, docs_per_split)
    out_keys = torch.empty(num_queries, splits, k_pad, dtype=torch.int64, device=queries.device)
    precision = "ieee" if queries.dtype == torch.float32 else "tf32"

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(num_queries, meta["BLOCK_Q"]), splits)

    _similarity_topk_fwd[grid](
        queries, corpus, out_keys, num_queries, num_docs, docs_per_split,
        queries.stride(0), corpus.stride(0), out_keys.stride(0), out_keys.stride(1),
        DIM=dim, K_PAD=k_pad, BLOCK_N=block_n, DOT_PRECISION=precision,
    )
    keys = out_keys.view(num_queries, splits * k_pad)
    keys = keys.topk(k, dim=1).values  # merge the slices; keys are unique, so no tie questions
    return _keys_to_scores_ids(keys)
