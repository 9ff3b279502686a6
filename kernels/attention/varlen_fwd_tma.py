"""Hopper variant of the varlen shared-prefix attention forward: K/V through TMA tensor descriptors.

Same function, layout, tiling and GQA head packing as `varlen_fwd` (read its docstring first); what
differs is how key/value blocks reach shared memory. Each program builds, on the device, one tensor
descriptor per key range (its sequence's own K and V, and its prefix group's K and V) whose shape is
that range's (length, head_dim) slice of the packed tensor. The copy engine (TMA) then moves whole
blocks asynchronously, zero-filling rows past the range's end, so the software pipeline keeps several
blocks in flight without address arithmetic in the warps. Zero-filled rows are still masked to -inf
in the scores (a zero key scores 0, not -inf), exactly as the pointer kernel masks out-of-range keys.
The unmasked main loop can optionally be warp-specialised (`tl.range(..., warp_specialize=True)`,
a producer warp issuing the TMA copies while consumer warpgroups do the dots and the softmax).

Q is loaded once per program with ordinary gathered loads (row r of a packed-head tile is position
r // heads_per_tile of head r % heads_per_tile, not one rectangle of the packed tensor) and O is
stored the same way: both happen once, outside the key loop.

Status: correct on an H100 (bf16 rel err 2.2e-3, like the pointer kernel) but not faster there: at
its best tiling within +-4% of the pointer kernel, at the same tiling 11% slower, and warp
specialisation did not help (kernels/NOTES.md, v3). The dispatcher therefore keeps the pointer kernel;
this file stays as the measured Hopper variant for benchmarks and the next attempt.

Device-side descriptors need a global scratch allocation per launch (`triton.set_allocator`); the
wrapper installs a torch allocator. `tma_supported` says whether this path can run: Triton with
`tl.make_tensor_descriptor`, a CUDA device of compute capability 9.x or newer (or the interpreter),
and 16-byte-aligned bases and token strides.
"""

from __future__ import annotations

import inspect
import os

import torch
import triton
import triton.language as tl

from kernels.attention.varlen_fwd import (
    _load_q_tile,
    _online_softmax_update,
    _program_tile,
    _store_o_tile,
    prepare_launch,
)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TENSOR_DESCRIPTORS = hasattr(tl, "make_tensor_descriptor") and hasattr(triton, "set_allocator")
HAS_WARP_SPECIALIZE = "warp_specialize" in inspect.signature(tl.range.__init__).parameters

# Tiling per head dim: (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize), the best of each
# head dim in one H100 run of benchmarks/gpu_tune_v3.py (kernels/NOTES.md, v3); the interpreter uses a
# small tile.
TMA_TILINGS: dict[int, tuple[int, int, int, int, bool]] = {
    128: (64, 64, 4, 3, False),
    64: (128, 64, 4, 3, False),
}
_INTERPRET_TILING = (64, 32, 4, 1, False)


@triton.jit
def _softmax_step(acc, l_i, m_i, q, k_desc, v_desc, start_n, n_limit, offs_m, qk_scale,
                  BLOCK_N: tl.constexpr, MASK_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key block of the online softmax (MASK_MODE as in varlen_fwd: 0 none, 1 bounds, 2 causal)."""
    k = k_desc.load([start_n, 0])
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if MASK_MODE == 1:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        qk = tl.where(offs_n[None, :] < n_limit, qk, float("-inf"))
    if MASK_MODE == 2:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < n_limit)
        qk = tl.where(keep, qk, float("-inf"))
    v = v_desc.load([start_n, 0])
    return _online_softmax_update(acc, l_i, m_i, qk, v, qk_scale, DOT_PRECISION)


@triton.jit
def _key_range(acc, l_i, m_i, q, k_desc, v_desc, lo, hi, n_limit, offs_m, qk_scale,
               BLOCK_N: tl.constexpr, MASK_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr,
               WARP_SPECIALIZE: tl.constexpr):
    """Key blocks [lo, hi) of one descriptor pair; only unmasked loops are warp-specialised."""
    if WARP_SPECIALIZE and MASK_MODE == 0:
        for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=True):
            acc, l_i, m_i = _softmax_step(acc, l_i, m_i, q, k_desc, v_desc, start_n, n_limit, offs_m, qk_scale,
                                          BLOCK_N, MASK_MODE, DOT_PRECISION)
    else:
        for start_n in tl.range(lo, hi, BLOCK_N):
            acc, l_i, m_i = _softmax_step(acc, l_i, m_i, q, k_desc, v_desc, start_n, n_limit, offs_m, qk_scale,
                                          BLOCK_N, MASK_MODE, DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def _varlen_prefix_attention_fwd_tma(
    Q, K, V, PK, PV, Out,
    cu_seqlens, cu_prefix_lens, prefix_group,
    sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_pkt, stride_pkh, stride_pvt, stride_pvh, stride_ot, stride_oh,
    num_kv_heads, heads_per_kv, heads_per_tile,
    HEAD_DIM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    seq, kv_head, first_head, seq_start, seq_len, m_start = _program_tile(
        cu_seqlens, num_kv_heads, heads_per_kv, heads_per_tile, BLOCK_M)
    positions = BLOCK_M // heads_per_tile  # query positions per tile
    if m_start >= seq_len:  # grid is sized for the longest sequence (also skips empty sequences)
        return
    q, offs_m, heads, row_ok = _load_q_tile(Q, seq_start, seq_len, m_start, first_head, heads_per_tile,
                                            stride_qt, stride_qh, BLOCK_M, HEAD_DIM)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # softmax in base 2

    if HAS_PREFIX:
        group = tl.load(prefix_group + seq)
        p_start = tl.load(cu_prefix_lens + group).to(tl.int64)
        p_len = (tl.load(cu_prefix_lens + group + 1) - tl.load(cu_prefix_lens + group)).to(tl.int32)
        # An empty prefix group still gets a valid 1-row descriptor; no block of it is loaded.
        pk_desc = tl.make_tensor_descriptor(PK + p_start * stride_pkt + kv_head * stride_pkh,
                                            shape=[tl.maximum(p_len, 1), HEAD_DIM], strides=[stride_pkt, 1],
                                            block_shape=[BLOCK_N, HEAD_DIM])
        pv_desc = tl.make_tensor_descriptor(PV + p_start * stride_pvt + kv_head * stride_pvh,
                                            shape=[tl.maximum(p_len, 1), HEAD_DIM], strides=[stride_pvt, 1],
                                            block_shape=[BLOCK_N, HEAD_DIM])
        p_full = (p_len // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, pk_desc, pv_desc, 0, p_full, p_len, offs_m, qk_scale,
                                   BLOCK_N, 0, DOT_PRECISION, WARP_SPECIALIZE)
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, pk_desc, pv_desc, p_full, p_len, p_len, offs_m, qk_scale,
                                   BLOCK_N, 1, DOT_PRECISION, WARP_SPECIALIZE)

    k_desc = tl.make_tensor_descriptor(K + seq_start * stride_kt + kv_head * stride_kh,
                                       shape=[seq_len, HEAD_DIM], strides=[stride_kt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V + seq_start * stride_vt + kv_head * stride_vh,
                                       shape=[seq_len, HEAD_DIM], strides=[stride_vt, 1],
                                       block_shape=[BLOCK_N, HEAD_DIM])
    if IS_CAUSAL:
        unmasked_end = (m_start // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, k_desc, v_desc, 0, unmasked_end, seq_len, offs_m, qk_scale,
                                   BLOCK_N, 0, DOT_PRECISION, WARP_SPECIALIZE)
        diag_end = tl.minimum(m_start + positions, seq_len)
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, k_desc, v_desc, unmasked_end, diag_end, seq_len, offs_m,
                                   qk_scale, BLOCK_N, 2, DOT_PRECISION, WARP_SPECIALIZE)
    else:
        full_end = (seq_len // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, k_desc, v_desc, 0, full_end, seq_len, offs_m, qk_scale,
                                   BLOCK_N, 0, DOT_PRECISION, WARP_SPECIALIZE)
        acc, l_i, m_i = _key_range(acc, l_i, m_i, q, k_desc, v_desc, full_end, seq_len, seq_len, offs_m, qk_scale,
                                   BLOCK_N, 1, DOT_PRECISION, WARP_SPECIALIZE)

    _store_o_tile(Out, acc, l_i, seq_start, offs_m, heads, row_ok, stride_ot, stride_oh, HEAD_DIM)


def _scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    """Global memory for the device-side descriptors (128 bytes each, per program)."""
    return torch.empty(size, dtype=torch.int8, device=_SCRATCH_DEVICE[0])


_SCRATCH_DEVICE: list[torch.device | str] = ["cuda"]


def _aligned(t: torch.Tensor) -> bool:
    """TMA needs 16-byte-aligned bases and token/head strides (head_dim stride 1 is checked elsewhere)."""
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and (t.stride(0) * size) % 16 == 0 and (t.stride(1) * size) % 16 == 0


def tma_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor | None = None,
                  prefix_v: torch.Tensor | None = None) -> bool:
    """True where this kernel can run: descriptor-capable Triton, sm90+ (or the interpreter), aligned tensors."""
    if not HAS_TENSOR_DESCRIPTORS:
        return False
    if not _INTERPRET:
        if q.device.type != "cuda" or torch.cuda.get_device_capability(q.device)[0] < 9:
            return False
    tensors = [t for t in (k, v, prefix_k, prefix_v) if t is not None]
    return all(t.dim() == 3 and t.stride(-1) == 1 and _aligned(t) for t in tensors)


def varlen_prefix_attention_tma(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    prefix_k: torch.Tensor | None = None,
    prefix_v: torch.Tensor | None = None,
    cu_prefix_lens: torch.Tensor | None = None,
    prefix_group: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    heads_per_tile: int | None = None,
    tiling: tuple[int, int, int, int, bool] | None = None,
) -> torch.Tensor:
    """Same contract as `varlen_fwd.varlen_prefix_attention_triton`; `tiling` overrides `TMA_TILINGS`.

    Raises RuntimeError where `tma_supported` is False (callers fall back to the pointer kernel).
    """
    if not tma_supported(q, k, v, prefix_k, prefix_v):
        raise RuntimeError("TMA descriptors unavailable here (Triton, device capability or alignment)")
    total, num_heads, head_dim = q.shape
    a = prepare_launch(q, k, v, cu_seqlens, sm_scale, prefix_k, prefix_v, cu_prefix_lens, prefix_group,
                       heads_per_tile)
    if out is None:
        out = torch.empty_like(q)
    if total == 0 or a.num_seqs == 0:
        return out
    if tiling is None:
        tiling = _INTERPRET_TILING if _INTERPRET else TMA_TILINGS.get(head_dim, (64, 64, 4, 3, False))
    block_m, block_n, warps, stages, warp_specialize = tiling
    if warp_specialize and not HAS_WARP_SPECIALIZE:
        raise RuntimeError("this Triton has no tl.range(warp_specialize=...)")
    _SCRATCH_DEVICE[0] = q.device
    triton.set_allocator(_scratch)
    positions = block_m // a.heads_per_tile
    grid = (triton.cdiv(max(int(max_seqlen), 1), positions), a.num_seqs * num_heads // a.heads_per_tile)
    _varlen_prefix_attention_fwd_tma[grid](
        *a.arguments(q, k, v, out, cu_seqlens), **a.constants(head_dim, causal),
        BLOCK_M=block_m, BLOCK_N=block_n, WARP_SPECIALIZE=warp_specialize,
        num_warps=warps, num_stages=stages,
    )
    return out
