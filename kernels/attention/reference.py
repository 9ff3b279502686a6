"""Plain PyTorch references for the varlen (shared-prefix) attention kernel.

`varlen_prefix_attention_reference` states the function the kernel computes, one sequence at a
time with an explicit score matrix: the specification the tests hold the kernel to (run it on
float64 inputs), for softmax and the other attention normalisers the kernel takes.
`varlen_prefix_attention_sdpa` computes the softmax function through `scaled_dot_product_attention`,
sequence by sequence: the dispatcher's exact path on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _seq_bounds(cu: torch.Tensor) -> list[tuple[int, int]]:
    edges = cu.tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def _keys_for_sequence(k: torch.Tensor, v: torch.Tensor, start: int, end: int,
                       prefix_k: torch.Tensor | None, prefix_v: torch.Tensor | None,
                       prefix_bounds: list[tuple[int, int]] | None, group: int) -> tuple[torch.Tensor, ...]:
    """(prefix ++ own) keys and values of one sequence, and the prefix length."""
    ks, vs = k[start:end], v[start:end]
    plen = 0
    if prefix_k is not None and prefix_v is not None and prefix_bounds is not None:
        p0, p1 = prefix_bounds[group]
        plen = p1 - p0
        ks = torch.cat([prefix_k[p0:p1], ks])
        vs = torch.cat([prefix_v[p0:p1], vs])
    return ks, vs, plen


def _visible(q_len: int, plen: int, causal: bool, device: torch.device) -> torch.Tensor:
    """(q_len, plen + q_len) bool: the whole prefix, then the own keys (left of the diagonal if causal)."""
    own = torch.ones(q_len, q_len, dtype=torch.bool, device=device)
    if causal:
        own = own.tril()
    return torch.cat([torch.ones(q_len, plen, dtype=torch.bool, device=device), own], dim=1)


def normalise_scores(scores: torch.Tensor, visible: torch.Tensor, normalizer: str = "softmax", *,
                     ssmax_s: float = 1.0, sigmoid_bias: float = 0.0, softpick_eps: float = 1e-6) -> torch.Tensor:
    """Attention weights from scaled scores (..., queries, keys) and the keys each query may see.

    - softmax: the usual.
    - ssmax (Scalable-Softmax, Nakanishi 2025): softmax of scores * s * ln(n), n = keys the query sees,
      so attention does not flatten as the context grows.
    - sigmoid (FlashSigmoid, Ramapuram et al. 2024): sigmoid(score + b) per key, no normalisation
      across keys (b = -ln(n) is that paper's choice for a length-n sequence).
    - softpick (Zuhri et al. 2025): relu(e^x - 1) / (sum_j |e^x_j - 1| + eps): weights may all be 0
      (no attention sink needed) and need not sum to 1.
    """
    if normalizer == "softmax":
        return scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    if normalizer == "ssmax":
        n = visible.sum(dim=-1, keepdim=True).to(scores.dtype)
        return (scores * ssmax_s * n.log()).masked_fill(~visible, float("-inf")).softmax(dim=-1)
    if normalizer == "sigmoid":
        return torch.sigmoid(scores + sigmoid_bias) * visible
    if normalizer == "softpick":
        e = torch.expm1(scores) * visible
        return e.clamp(min=0) / (e.abs().sum(dim=-1, keepdim=True) + softpick_eps)
    raise ValueError(f"normalizer: {normalizer!r} is not one of softmax, ssmax, sigmoid, softpick")


def varlen_prefix_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *,
    causal: bool = True, sm_scale: float | None = None,
    prefix_k: torch.Tensor | None = None, prefix_v: torch.Tensor | None = None,
    cu_prefix_lens: torch.Tensor | None = None, prefix_group: torch.Tensor | None = None,
    normalizer: str = "softmax", **normalizer_options: float,
) -> torch.Tensor:
    """normalise(q k^T * scale, mask) v per sequence, keys = its prefix group's then its own; GQA by repeat.

    `normalizer` and its options as in `normalise_scores` (softmax by default).
    """
    heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    scale = sm_scale if sm_scale is not None else head_dim ** -0.5
    prefix_bounds = _seq_bounds(cu_prefix_lens) if cu_prefix_lens is not None else None
    groups = prefix_group.tolist() if prefix_group is not None else None
    out = torch.empty_like(q)
    for i, (start, end) in enumerate(_seq_bounds(cu_seqlens)):
        if end == start:
            continue
        ks, vs, plen = _keys_for_sequence(k, v, start, end, prefix_k, prefix_v, prefix_bounds,
                                          groups[i] if groups is not None else 0)
        ks = ks.repeat_interleave(heads // kv_heads, dim=1)  # (keys, heads, d)
        vs = vs.repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[start:end], ks) * scale
        visible = _visible(end - start, plen, causal, q.device)
        weights = normalise_scores(scores, visible, normalizer, **normalizer_options)
        out[start:end] = torch.einsum("hqk,khd->qhd", weights, vs)
    return out


def varlen_prefix_attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *,
    causal: bool = True, sm_scale: float | None = None,
    prefix_k: torch.Tensor | None = None, prefix_v: torch.Tensor | None = None,
    cu_prefix_lens: torch.Tensor | None = None, prefix_group: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same function through SDPA per sequence (exact; no score matrix kept beyond one sequence)."""
    heads, kv_heads = q.shape[1], k.shape[1]
    prefix_bounds = _seq_bounds(cu_prefix_lens) if cu_prefix_lens is not None else None
    groups = prefix_group.tolist() if prefix_group is not None else None
    out = torch.empty_like(q)
    for i, (start, end) in enumerate(_seq_bounds(cu_seqlens)):
        if end == start:
            continue
        ks, vs, plen = _keys_for_sequence(k, v, start, end, prefix_k, prefix_v, prefix_bounds,
                                          groups[i] if groups is not None else 0)
        q_len = end - start
        # With no prefix the causal mask is SDPA's own top-left triangle; with one it is bottom-right.
        mask = None if (plen == 0 and causal) or not causal else _visible(q_len, plen, True, q.device)
        o = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1),
            attn_mask=mask, is_causal=causal and plen == 0, scale=sm_scale, enable_gqa=heads != kv_heads,
        )
        out[start:end] = o.transpose(0, 1)
    return out
