"""`attn_implementation="rrs_fused"` for transformers causal LMs, backed by the varlen kernel.

Two ways in:
- Dense batches (no packing context): each batch row is one sequence; keys longer than the
  queries (a KV cache) are that row's prefix. Batches that need a padding mask get one from
  transformers' SDPA mask builder and run through transformers' own SDPA function, unchanged.
- Packed batches: inside `packed_attention(batch)` (or with `rrs_packing=batch` passed through the
  model's forward kwargs) the model sees one row of all sequences back to back; `batch` gives the
  `cu_seqlens` and, per layer, the prefix keys/values every sequence attends in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from kernels.attention.dispatch import AttentionBackend, varlen_prefix_attention

ATTN_IMPLEMENTATION = "rrs_fused"


@dataclass
class PackedAttentionBatch:
    """Packing of one forward pass: sequence boundaries and the per-layer shared prefixes.

    prefix_keys[layer] / prefix_values[layer] are (prefix_tokens, kv_heads, head_dim) views (any
    strides with a contiguous last dim), groups delimited by `cu_prefix_lens` and chosen per
    sequence by `prefix_group` (None: one group shared by all).
    """

    cu_seqlens: torch.Tensor
    max_seqlen: int
    prefix_keys: Sequence[torch.Tensor] | None = None
    prefix_values: Sequence[torch.Tensor] | None = None
    cu_prefix_lens: torch.Tensor | None = None
    prefix_group: torch.Tensor | None = None
    backend: AttentionBackend = "auto"


_ACTIVE_BATCH: ContextVar[PackedAttentionBatch | None] = ContextVar("rrs_packed_attention", default=None)


@contextmanager
def packed_attention(batch: PackedAttentionBatch) -> Iterator[PackedAttentionBatch]:
    """Make `batch` the packing every rrs_fused attention call in this context reads."""
    token = _ACTIVE_BATCH.set(batch)
    try:
        yield batch
    finally:
        _ACTIVE_BATCH.reset(token)


def _packed_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    batch: PackedAttentionBatch, scaling: float | None, causal: bool) -> torch.Tensor:
    if query.shape[0] != 1:
        raise ValueError("packed attention expects one row holding all sequences back to back")
    # (1, heads, tokens, d) -> (tokens, heads, d) views: the kernel takes strides, nothing is copied.
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)
    prefix: dict[str, Any] = {}
    if batch.prefix_keys is not None and batch.prefix_values is not None:
        layer = module.layer_idx
        prefix = dict(prefix_k=batch.prefix_keys[layer], prefix_v=batch.prefix_values[layer],
                      cu_prefix_lens=batch.cu_prefix_lens, prefix_group=batch.prefix_group)
        if prefix["cu_prefix_lens"] is None:
            n = prefix["prefix_k"].shape[0]
            prefix["cu_prefix_lens"] = torch.tensor([0, n], dtype=torch.int32, device=q.device)
    out = varlen_prefix_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, causal=causal,
                                  sm_scale=scaling, backend=batch.backend, **prefix)
    return out.unsqueeze(0)  # (1, tokens, heads, d), the layout transformers' attention functions return


def _dense_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   scaling: float | None, causal: bool) -> torch.Tensor:
    rows, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    past = kv_len - q_len  # cached keys: each row's own prefix, its own group
    dev = query.device
    q = query.transpose(1, 2).reshape(rows * q_len, heads, dim)
    k = key[:, :, past:].transpose(1, 2).reshape(rows * q_len, kv_heads, dim)
    v = value[:, :, past:].transpose(1, 2).reshape(rows * q_len, kv_heads, dim)
    cu = torch.arange(rows + 1, device=dev, dtype=torch.int32) * q_len
    prefix: dict[str, Any] = {}
    if past > 0:
        prefix = dict(prefix_k=key[:, :, :past].transpose(1, 2).reshape(rows * past, kv_heads, dim),
                      prefix_v=value[:, :, :past].transpose(1, 2).reshape(rows * past, kv_heads, dim),
                      cu_prefix_lens=torch.arange(rows + 1, device=dev, dtype=torch.int32) * past,
                      prefix_group=torch.arange(rows, device=dev, dtype=torch.int32))
    out = varlen_prefix_attention(q, k, v, cu, q_len, causal=causal, sm_scale=scaling, **prefix)
    return out.view(rows, q_len, heads, dim)


def rrs_fused_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention-function signature: (batch, heads, seq, d) in, (batch, seq, heads, d) out."""
    if dropout and module.training:
        raise ValueError("rrs_fused is an inference path: no attention dropout")
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if window is not None and key.shape[2] > window:
        raise NotImplementedError(f"rrs_fused has no sliding window; keys {key.shape[2]} exceed {window}")
    causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True)) if causal is None else bool(causal)
    batch = kwargs.get("rrs_packing") or _ACTIVE_BATCH.get()
    if batch is not None:
        return _packed_forward(module, query, key, value, batch, scaling, causal), None
    if attention_mask is not None:  # padding or a custom mask: transformers' exact SDPA path
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    return _dense_forward(query, key, value, scaling, causal), None


def rrs_fused_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """No mask for packed batches (cu_seqlens say it all; transformers would build a tokens x tokens
    block-diagonal one from the restarting position ids); SDPA's mask builder otherwise, which
    returns None for plain causal batches and a real mask where padding needs one."""
    if _ACTIVE_BATCH.get() is not None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


def register_rrs_attention() -> str:
    """Register `rrs_fused` with transformers (idempotent); returns the name for `attn_implementation=`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, rrs_fused_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, rrs_fused_mask)
    return ATTN_IMPLEMENTATION
