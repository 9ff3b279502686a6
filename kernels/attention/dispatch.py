"""Pick the attention implementation: the Triton kernel on CUDA, the exact SDPA path elsewhere.

`backend="triton"` forces the kernel, which on CPU tensors works only under `TRITON_INTERPRET=1`
(set before triton is first imported): that is how CI checks the kernel without a GPU.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from kernels.attention.reference import varlen_prefix_attention_reference, varlen_prefix_attention_sdpa

AttentionBackend = Literal["auto", "triton", "sdpa", "reference"]

_TRITON_HEAD_DIMS = (16, 32, 64, 128, 256)


def triton_usable(device: torch.device) -> bool:
    """True where the Triton kernel can run: a CUDA device, or any device under the interpreter."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: AttentionBackend, q: torch.Tensor) -> AttentionBackend:
    """`auto`: the kernel on CUDA for the head dims and dtypes it supports, SDPA otherwise."""
    if backend != "auto":
        return backend
    if q.device.type == "cuda" and q.shape[-1] in _TRITON_HEAD_DIMS and triton_usable(q.device):
        return "triton"
    return "sdpa"


def varlen_prefix_attention(
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
    backend: AttentionBackend = "auto",
    normalizer: str = "softmax",
    **normalizer_options: float,
) -> torch.Tensor:
    """Attention over packed sequences (q: (tokens, heads, d); k, v: (tokens, kv_heads, d)).

    Each sequence i attends its own keys (causally if `causal`) and, when `prefix_k` is given,
    all keys of prefix group `prefix_group[i]` (default 0), placed before its own. `normalizer`
    (softmax, ssmax, sigmoid, softpick; options `ssmax_s`, `sigmoid_bias`, `softpick_eps`) is for
    research on attention variants: SDPA has only softmax, so the others take the reference off GPU.
    """
    chosen = resolve_backend(backend, q)
    if chosen == "sdpa" and normalizer != "softmax":
        chosen = "reference"
    prefix = dict(prefix_k=prefix_k, prefix_v=prefix_v, cu_prefix_lens=cu_prefix_lens,
                  prefix_group=prefix_group)
    if chosen == "triton":
        from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

        return varlen_prefix_attention_triton(q, k, v, cu_seqlens.to(torch.int32), max_seqlen,
                                              causal=causal, sm_scale=sm_scale, normalizer=normalizer,
                                              **normalizer_options, **_int32_indices(prefix))
    if chosen == "reference":
        return varlen_prefix_attention_reference(q, k, v, cu_seqlens, causal=causal, sm_scale=sm_scale,
                                                 normalizer=normalizer, **normalizer_options, **prefix)
    return varlen_prefix_attention_sdpa(q, k, v, cu_seqlens, causal=causal, sm_scale=sm_scale, **prefix)


def _int32_indices(prefix: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    return {name: (t.to(torch.int32) if t is not None and name in ("cu_prefix_lens", "prefix_group") else t)
            for name, t in prefix.items()}
