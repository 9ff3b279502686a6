"""Fused GPU kernels (Triton) with exact PyTorch references and CPU/GPU dispatch.

Stable entry points: `similarity_topk` (exact inner-product search) and `varlen_prefix_attention`
(packed shared-prefix attention). Importing this package never imports triton.
"""

from kernels.attention import varlen_prefix_attention
from kernels.topk import similarity_topk

__all__ = ["similarity_topk", "varlen_prefix_attention"]
