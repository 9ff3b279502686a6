"""Varlen packed fused attention forward with a shared prefix (Triton, FlashAttention-2 style).

Layout is "thd" like flash-attn's varlen API: `q` is (total_tokens, heads, head_dim) with the
sequences packed back to back and delimited by `cu_seqlens`; `k`/`v` are (total_tokens, kv_heads,
head_dim) with the same packing (grouped-query attention: query head h reads KV head
h // (heads // kv_heads)). Each sequence may additionally attend, in full, one prefix taken from
a second packed tensor (`prefix_k`/`prefix_v`, delimited by `cu_prefix_lens`, chosen per sequence
by `prefix_group`). The prefix is read in place by every sequence that uses it, never copied.

One program owns BLOCK_M query rows of one sequence and one KV head: `heads_per_tile` query heads
that share that KV head (grouped-query attention) times BLOCK_M // heads_per_tile positions, row r
being position r // heads_per_tile of head r % heads_per_tile. Packing the heads fills the tile of a
short sequence (fewer padding rows, narrower diagonal) and reads each K/V block once for all of
them. It streams the prefix blocks, then the sequence's own blocks (only those left of the diagonal
when causal), keeping the running row max and row sum of the online softmax; scores never leave
registers. Streaming prefix then suffix in one
loop is the exact merge of the two partial softmaxes: both update the same running max and sum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Masking modes of the inner loop, decided at compile time per call site.
_NO_MASK = 0  # every key column of every block is valid (full blocks left of the diagonal)
_BOUNDS = 1  # the last block may run past the keys' end
_CAUSAL = 2  # diagonal blocks: key position <= query position (and in bounds)

# Attention normalisers (NORMALIZER), for research users; pretrained models use softmax.
NORMALIZERS = ("softmax", "ssmax", "sigmoid", "softpick")


def _hopper_configs() -> list[triton.Config]:
    """Candidate tilings for H100/H200; autotune picks per (head_dim, causal, prefix) key."""
    if _INTERPRET:
        # The interpreter runs every block op in numpy: one mid-size tile keeps CI quick while
        # still crossing block boundaries on the ragged test lengths.
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
    # From benchmarks/gpu_tune.py on an H100 (bf16, GQA 32/8 packed 4 heads a tile, 1024-token prefix,
    # 100-600-token suffixes): d=128 best 128x64 8 warps (2 or 3 stages, within noise: 360/357
    # TFLOP/s at 64k tokens), d=64 best 128x64 4 warps (320); 128x128 tiles lost at both head dims.
    shapes = [(128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


@triton.jit
def _exp2_poly(x):
    """2^x on the FMA units instead of the special-function unit (x <= 8 here; clamped below at -126).

    Split x = i + f with f in [0, 1); 2^f by a cubic fitted for relative error (max 8.6e-5, under fp16's
    4.9e-4 and bf16's 3.9e-3 rounding of the probabilities it feeds); 2^i added to the exponent bits.
    """
    x = tl.maximum(x, -126.0)
    xi = tl.floor(x)
    f = x - xi
    p = 1.0 + f * (0.69511681 + f * (0.22764491 + f * 0.07706712))
    bits = p.to(tl.int32, bitcast=True) + (xi.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _block_exp2(x, EXP2_SPLIT: tl.constexpr):
    """exp2 of a (rows, BLOCK_N) block; with EXP2_SPLIT every other column goes through `_exp2_poly`.

    Splitting the exponentials between the special-function and FMA pipes is FlashAttention-4's way
    past the exp throughput limit; only for half-precision inputs (fp32 keeps exact exp2).
    """
    if EXP2_SPLIT:
        ROWS: tl.constexpr = x.shape[0]
        COLS: tl.constexpr = x.shape[1]
        even, odd = tl.split(tl.reshape(x, (ROWS, COLS // 2, 2)))
        return tl.reshape(tl.join(tl.exp2(even), _exp2_poly(odd)), (ROWS, COLS))
    else:
        return tl.exp2(x)


@triton.jit
def _move_max(acc, l_i, m_i, m_blk):
    """Take the running max up to this block's row maxima, rescaling acc and l_i to match."""
    m_new = tl.maximum(m_i, m_blk)
    alpha = tl.exp2(m_i - m_new)
    return acc * alpha[:, None], l_i * alpha, m_new


@triton.jit
def _online_softmax_update(acc, l_i, m_i, qk, v, qk_scale, DOT_PRECISION: tl.constexpr,
                           LAZY_RESCALE: tl.constexpr = False, EXP2_SPLIT: tl.constexpr = False):
    """Fold one block of masked raw scores and its values into (acc, l_i, m_i), base-2 softmax.

    Every row sees at least one valid key in every block it visits (block starts are in range and left
    of the row), so the new max is finite and exp2 never sees (-inf) - (-inf). With LAZY_RESCALE
    (FlashAttention-4) the running max, and so acc and l_i, move only when some row's max grew by more
    than 8 (base 2): one branch per block instead of a rescale of acc every block. Until then the
    probabilities are taken against the stale max, so they stay below 2^8 (safe in fp16/bf16). The
    result is the same softmax: acc and l_i always share one reference max.
    """
    m_blk = tl.max(qk, 1) * qk_scale
    if LAZY_RESCALE:
        if tl.max(m_blk - m_i, 0) > 8.0:  # the first block always passes (m_i = -inf)
            acc, l_i, m_i = _move_max(acc, l_i, m_i, m_blk)
    else:
        acc, l_i, m_i = _move_max(acc, l_i, m_i, m_blk)
    p = _block_exp2(qk * qk_scale - m_i[:, None], EXP2_SPLIT)
    l_i = l_i + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def _sigmoid_update(acc, qk, v, qk_scale, bias2, DOT_PRECISION: tl.constexpr):
    """Sigmoid attention (FlashSigmoid): acc += sigmoid(s * scale + b) v, rows not normalised.

    In base 2: sigmoid(z) = 1 / (1 + 2^(-z log2 e)); masked scores (-inf) give 1 / inf = 0. With no
    running max or sum, the prefix and the sequence's own keys merge by plain addition.
    """
    p = 1.0 / (1.0 + tl.exp2(-(qk * qk_scale + bias2)))
    return tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)


@triton.jit
def _softpick_update(acc, l_i, m_i, qk, v, qk_scale, DOT_PRECISION: tl.constexpr):
    """Softpick: relu(e^x - 1) / (sum |e^x - 1| + eps), kept online against a running max m >= 0.

    e^x - 1 = e^m (e^(x-m) - e^-m): numerator and denominator both carry e^m, so they rescale like
    softmax's; m starts at 0 (not -inf), which keeps e^-m <= 1 for rows of very negative scores.
    Masked keys contribute nothing (not |0 - 1|), so they are zeroed explicitly.
    """
    x = qk * qk_scale
    m_new = tl.maximum(m_i, tl.max(x, 1))
    alpha = tl.exp2(m_i - m_new)
    e = tl.exp2(x - m_new[:, None]) - tl.exp2(-m_new)[:, None]
    e = tl.where(x == float("-inf"), 0.0, e)
    acc = tl.dot(tl.maximum(e, 0.0).to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
    return acc, l_i * alpha + tl.sum(tl.abs(e), 1), m_new


@triton.jit
def _normalised_update(acc, l_i, m_i, qk, v, qk_scale, norm_param, DOT_PRECISION: tl.constexpr,
                       LAZY_RESCALE: tl.constexpr, EXP2_SPLIT: tl.constexpr, NORMALIZER: tl.constexpr):
    """Fold one block of masked raw scores in, with the normaliser chosen at compile time."""
    if NORMALIZER == 0:
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, qk, v, qk_scale, DOT_PRECISION,
                                               LAZY_RESCALE, EXP2_SPLIT)
    elif NORMALIZER == 1:  # Scalable-Softmax: qk_scale is a per-row vector (s log n of each row)
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, qk * qk_scale[:, None], v, 1.0, DOT_PRECISION,
                                               LAZY_RESCALE, EXP2_SPLIT)
    elif NORMALIZER == 2:
        acc = _sigmoid_update(acc, qk, v, qk_scale, norm_param, DOT_PRECISION)
    else:
        acc, l_i, m_i = _softpick_update(acc, l_i, m_i, qk, v, qk_scale, DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def _attend_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, lo, hi, n_limit,
                       offs_m, offs_d, qk_scale,
                       BLOCK_N: tl.constexpr, MASK_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                       LAZY_RESCALE: tl.constexpr = False, EXP2_SPLIT: tl.constexpr = False,
                       NORMALIZER: tl.constexpr = 0, norm_param=0.0):
    """Online-softmax update of (acc, l_i, m_i) with key blocks [lo, hi) of one key range."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kt_ptrs = k_base + offs_n[None, :].to(tl.int64) * stride_kt + offs_d[:, None]
        v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vt + offs_d[None, :]
        if MASK_MODE == 0:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < n_limit, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < n_limit, other=0.0)
        qk = tl.dot(q, kt, input_precision=DOT_PRECISION)
        if MASK_MODE == 1:
            qk = tl.where(offs_n[None, :] < n_limit, qk, float("-inf"))
        if MASK_MODE == 2:
            keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < n_limit)
            qk = tl.where(keep, qk, float("-inf"))
        acc, l_i, m_i = _normalised_update(acc, l_i, m_i, qk, v, qk_scale, norm_param, DOT_PRECISION,
                                           LAZY_RESCALE, EXP2_SPLIT, NORMALIZER)
    return acc, l_i, m_i


@triton.jit
def _program_tile(cu_seqlens, num_kv_heads, heads_per_kv, heads_per_tile, BLOCK_M: tl.constexpr):
    """This program's (sequence, KV head, first query head, sequence start and length, first position)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    tiles_per_kv = heads_per_kv // heads_per_tile
    seq = pid_bh // (num_kv_heads * tiles_per_kv)
    kv_head = (pid_bh // tiles_per_kv) % num_kv_heads
    first_head = kv_head * heads_per_kv + (pid_bh % tiles_per_kv) * heads_per_tile
    seq_start = tl.load(cu_seqlens + seq).to(tl.int64)
    seq_len = (tl.load(cu_seqlens + seq + 1) - tl.load(cu_seqlens + seq)).to(tl.int32)
    m_start = pid_m * (BLOCK_M // heads_per_tile)
    return seq, kv_head, first_head, seq_start, seq_len, m_start


@triton.jit
def _load_q_tile(Q, seq_start, seq_len, m_start, first_head, heads_per_tile, stride_qt, stride_qh,
                 BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Gather the tile's query rows: row r is position m_start + r // heads_per_tile of head r % heads_per_tile."""
    positions = BLOCK_M // heads_per_tile
    rows = tl.arange(0, BLOCK_M)
    offs_m = m_start + rows // heads_per_tile  # each row's query position (what causal compares)
    heads = first_head + rows % heads_per_tile
    offs_d = tl.arange(0, HEAD_DIM)
    # rows past positions * heads_per_tile (heads_per_tile not dividing BLOCK_M) belong to the next tile
    row_ok = ((offs_m < seq_len) & (rows < positions * heads_per_tile))[:, None]
    row_off = (seq_start + offs_m[:, None]) * stride_qt + heads[:, None].to(tl.int64) * stride_qh
    q = tl.load(Q + row_off + offs_d[None, :], mask=row_ok, other=0.0)
    return q, offs_m, heads, row_ok


@triton.jit
def _store_o_tile(Out, acc, l_i, seq_start, offs_m, heads, row_ok, stride_ot, stride_oh, HEAD_DIM: tl.constexpr,
                  NORMALIZER: tl.constexpr = 0, m_i=None, norm_param=0.0):
    """Normalise by the row sums (softmax, ssmax; softpick with its eps) and scatter rows to (tokens, heads, d)."""
    if NORMALIZER == 2:  # sigmoid: no normalisation
        out = acc
    elif NORMALIZER == 3:  # softpick's eps (norm_param) against sums held in units of e^m
        out = acc / (l_i + norm_param * tl.exp2(-m_i))[:, None]
    else:
        out = acc / l_i[:, None]
    o_off = (seq_start + offs_m[:, None]) * stride_ot + heads[:, None].to(tl.int64) * stride_oh
    tl.store(Out + o_off + tl.arange(0, HEAD_DIM)[None, :], out.to(Out.dtype.element_ty), mask=row_ok)


@triton.autotune(configs=_hopper_configs(),
                 key=["HEAD_DIM", "IS_CAUSAL", "HAS_PREFIX", "DOT_PRECISION", "LAZY_RESCALE", "EXP2_SPLIT",
                      "NORMALIZER"])
@triton.jit
def _varlen_prefix_attention_fwd(
    Q, K, V, PK, PV, Out,
    cu_seqlens, cu_prefix_lens, prefix_group,
    sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_pkt, stride_pkh, stride_pvt, stride_pvh, stride_ot, stride_oh,
    num_kv_heads, heads_per_kv, heads_per_tile, norm_param,
    HEAD_DIM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
    DOT_PRECISION: tl.constexpr, LAZY_RESCALE: tl.constexpr, EXP2_SPLIT: tl.constexpr,
    NORMALIZER: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq, kv_head, first_head, seq_start, seq_len, m_start = _program_tile(
        cu_seqlens, num_kv_heads, heads_per_kv, heads_per_tile, BLOCK_M)
    positions = BLOCK_M // heads_per_tile  # query positions per tile
    if m_start >= seq_len:  # grid is sized for the longest sequence (also skips empty sequences)
        return
    q, offs_m, heads, row_ok = _load_q_tile(Q, seq_start, seq_len, m_start, first_head, heads_per_tile,
                                            stride_qt, stride_qh, BLOCK_M, HEAD_DIM)
    offs_d = tl.arange(0, HEAD_DIM)

    # softpick keeps its running max >= 0 (see _softpick_update); the others start at -inf
    if NORMALIZER == 3:
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # softmax in base 2: exp(x) = exp2(x * log2(e))

    if HAS_PREFIX:
        group = tl.load(prefix_group + seq)
        p_start = tl.load(cu_prefix_lens + group).to(tl.int64)
        p_len = (tl.load(cu_prefix_lens + group + 1) - tl.load(cu_prefix_lens + group)).to(tl.int32)
    else:
        p_len = 0
    if NORMALIZER == 1:
        # Scalable-Softmax: each row's logits times s * ln(n), n = the keys that row attends (ln 1 = 0
        # would turn masked -inf into NaN; a one-key row's output is that key's value at any scale).
        if IS_CAUSAL:
            n_keys = offs_m + 1 + p_len
        else:
            n_keys = tl.zeros_like(offs_m) + seq_len + p_len
        qk_scale = qk_scale * norm_param * tl.maximum(tl.log(n_keys.to(tl.float32)), 1e-6)
    if HAS_PREFIX:
        pk_base = PK + p_start * stride_pkt + kv_head * stride_pkh
        pv_base = PV + p_start * stride_pvt + kv_head * stride_pvh
        p_full = (p_len // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, pk_base, pv_base, stride_pkt, stride_pvt,
                                           0, p_full, p_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 0, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, pk_base, pv_base, stride_pkt, stride_pvt,
                                           p_full, p_len, p_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 1, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)

    k_base = K + seq_start * stride_kt + kv_head * stride_kh
    v_base = V + seq_start * stride_vt + kv_head * stride_vh
    if IS_CAUSAL:
        # Blocks wholly left of this tile's first position need no mask; the diagonal ones do. The
        # first masked block starts at or before every row's position, so each row's running max
        # is finite after it (later all-masked blocks then add exp2(-inf) = 0).
        unmasked_end = (m_start // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                           0, unmasked_end, seq_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 0, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)
        diag_end = tl.minimum(m_start + positions, seq_len)
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                           unmasked_end, diag_end, seq_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 2, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)
    else:
        full_end = (seq_len // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                           0, full_end, seq_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 0, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)
        acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                           full_end, seq_len, seq_len, offs_m, offs_d, qk_scale,
                                           BLOCK_N, 1, DOT_PRECISION, LAZY_RESCALE, EXP2_SPLIT,
                                           NORMALIZER, norm_param)

    _store_o_tile(Out, acc, l_i, seq_start, offs_m, heads, row_ok, stride_ot, stride_oh, HEAD_DIM, NORMALIZER, m_i,
                  norm_param)


SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
MAX_HEADS_PER_TILE = 8  # the smallest tile (BLOCK_M 64) then still spans 8 positions
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def default_heads_per_tile(heads_per_kv: int) -> int:
    """Query heads packed into one tile: the largest divisor of the GQA ratio up to MAX_HEADS_PER_TILE."""
    return max(n for n in range(1, min(heads_per_kv, MAX_HEADS_PER_TILE) + 1) if heads_per_kv % n == 0)


def _check_packed(name: str, t: torch.Tensor, dtype: torch.dtype, head_dim: int) -> None:
    if t.dim() != 3 or t.shape[-1] != head_dim:
        raise ValueError(f"{name} must be (tokens, heads, {head_dim}), got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"{name} dtype {t.dtype} differs from q's {dtype}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in head_dim")


@dataclass
class PackedLaunch:
    """Validated launch arguments shared by this kernel and the TMA variant (`varlen_fwd_tma`)."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    cu_prefix_lens: torch.Tensor
    prefix_group: torch.Tensor
    has_prefix: bool
    num_seqs: int
    num_kv_heads: int
    heads_per_kv: int
    heads_per_tile: int
    scale: float
    precision: str

    def arguments(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, cu_seqlens: torch.Tensor
    ) -> tuple:
        """The positional arguments both kernels take, in their order: tensors, indices, scale, strides, heads."""
        pk, pv = self.prefix_k, self.prefix_v
        return (
            q, k, v, pk, pv, out,
            cu_seqlens, self.cu_prefix_lens, self.prefix_group,
            self.scale,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            pk.stride(0), pk.stride(1), pv.stride(0), pv.stride(1),
            out.stride(0), out.stride(1),
            self.num_kv_heads, self.heads_per_kv, self.heads_per_tile,
        )

    def constants(self, head_dim: int, causal: bool) -> dict:
        """The compile-time constants both kernels take."""
        return {"HEAD_DIM": head_dim, "IS_CAUSAL": causal, "HAS_PREFIX": self.has_prefix,
                "DOT_PRECISION": self.precision}


def prepare_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    sm_scale: float | None,
    prefix_k: torch.Tensor | None,
    prefix_v: torch.Tensor | None,
    cu_prefix_lens: torch.Tensor | None,
    prefix_group: torch.Tensor | None,
    heads_per_tile: int | None,
) -> PackedLaunch:
    """Check shapes/dtypes, fill the prefix placeholders and pick the head packing."""
    total, num_heads, head_dim = q.shape
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} not in {SUPPORTED_HEAD_DIMS}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {q.dtype} not supported")
    if q.stride(-1) != 1:
        raise ValueError("q must be contiguous in head_dim")
    _check_packed("k", k, q.dtype, head_dim)
    _check_packed("v", v, q.dtype, head_dim)
    num_kv_heads = k.shape[1]
    if k.shape[0] != total or v.shape[:2] != k.shape[:2] or num_heads % num_kv_heads:
        raise ValueError("k/v must pack the same tokens as q with kv_heads dividing heads")
    num_seqs = cu_seqlens.numel() - 1
    has_prefix = prefix_k is not None
    if has_prefix:
        assert prefix_v is not None and cu_prefix_lens is not None
        _check_packed("prefix_k", prefix_k, q.dtype, head_dim)
        _check_packed("prefix_v", prefix_v, q.dtype, head_dim)
        if prefix_k.shape[1] != num_kv_heads or prefix_v.shape[:2] != prefix_k.shape[:2]:
            raise ValueError("prefix_k/prefix_v must have kv_heads heads and equal shapes")
        if prefix_group is None:
            if cu_prefix_lens.numel() != 2:
                raise ValueError("prefix_group is required with several prefix groups")
            prefix_group = torch.zeros(num_seqs, dtype=torch.int32, device=q.device)
    else:  # placeholders the kernel never reads (HAS_PREFIX is a compile-time False)
        prefix_k, prefix_v = k, v
        cu_prefix_lens = cu_seqlens
        prefix_group = cu_seqlens
    assert prefix_v is not None and cu_prefix_lens is not None and prefix_group is not None
    scale = float(sm_scale) if sm_scale is not None else head_dim ** -0.5
    # fp32 inputs get exact fp32 dots (the model's exact path); halves use the tensor cores.
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    heads_per_kv = num_heads // num_kv_heads
    per_tile = default_heads_per_tile(heads_per_kv) if heads_per_tile is None else heads_per_tile
    if heads_per_kv % per_tile or per_tile > MAX_HEADS_PER_TILE:
        raise ValueError(f"heads_per_tile {per_tile} must divide {heads_per_kv} and be <= {MAX_HEADS_PER_TILE}")
    return PackedLaunch(prefix_k, prefix_v, cu_prefix_lens, prefix_group, has_prefix, num_seqs, num_kv_heads,
                        heads_per_kv, per_tile, scale, precision)


def varlen_prefix_attention_triton(
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
    config: triton.Config | None = None,
    lazy_rescale: bool = False,
    exp2_split: bool = False,
    normalizer: str = "softmax",
    ssmax_s: float = 1.0,
    sigmoid_bias: float = 0.0,
    softpick_eps: float = 1e-6,
) -> torch.Tensor:
    """Launch the kernel; shapes as in the module docstring. Returns (total_tokens, heads, head_dim).

    `heads_per_tile` (a divisor of heads // kv_heads; default `default_heads_per_tile`) and `config`
    (a fixed tiling instead of the autotuned one) exist for benchmarks that compare variants, as do
    FlashAttention-4's two softmax tricks, off by default until a card shows they pay: `lazy_rescale`
    (move the running max only when it grows by more than 2^8) and `exp2_split` (half the
    exponentials by a polynomial on the FMA units; fp16/bf16 only).

    `normalizer` (see `reference.normalise_scores` for the exact functions): "softmax"; "ssmax"
    (Scalable-Softmax: logits times `ssmax_s` * ln(keys the row attends)); "sigmoid" (FlashSigmoid:
    sigmoid(logit + `sigmoid_bias`), rows not normalised); "softpick" (relu(e^x - 1) over
    sum |e^x - 1| + `softpick_eps`). The FA4 options apply to the softmax family only.
    """
    if exp2_split and q.dtype == torch.float32:
        raise ValueError("exp2_split is for fp16/bf16 inputs: fp32 keeps the exact exp2")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer: {normalizer!r} is not one of {', '.join(NORMALIZERS)}")
    norm_id = NORMALIZERS.index(normalizer)
    if norm_id >= 2 and (lazy_rescale or exp2_split):
        raise ValueError(f"lazy_rescale/exp2_split are softmax tricks; {normalizer} has no running softmax")
    norm_param = {0: 0.0, 1: float(ssmax_s), 2: float(sigmoid_bias) * 1.4426950408889634,
                  3: float(softpick_eps)}[norm_id]
    total, num_heads, head_dim = q.shape
    a = prepare_launch(q, k, v, cu_seqlens, sm_scale, prefix_k, prefix_v, cu_prefix_lens, prefix_group,
                       heads_per_tile)
    if out is None:
        out = torch.empty_like(q)
    if total == 0 or a.num_seqs == 0:
        return out
    per_tile = a.heads_per_tile

    def grid(meta: dict) -> tuple[int, int]:
        positions = meta["BLOCK_M"] // per_tile
        return (triton.cdiv(max(int(max_seqlen), 1), positions), a.num_seqs * num_heads // per_tile)

    kernel = _varlen_prefix_attention_fwd
    launch_options: dict = {}
    if config is not None:  # the bare jit function with this tiling, bypassing autotune
        kernel = _varlen_prefix_attention_fwd.fn
        launch_options = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    kernel[grid](*a.arguments(q, k, v, out, cu_seqlens), norm_param, **a.constants(head_dim, causal),
                 LAZY_RESCALE=lazy_rescale, EXP2_SPLIT=exp2_split, NORMALIZER=norm_id, **launch_options)
    return out
