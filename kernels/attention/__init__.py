"""Varlen packed fused attention with shared prefixes: Triton kernel, references, dispatcher."""

from kernels.attention.dispatch import varlen_prefix_attention

__all__ = ["varlen_prefix_attention"]
