"""Device and dtype choice shared by every model backend."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` means CUDA when present, else CPU; an explicit device is taken as given."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """Half precision on GPU (bf16 where supported), fp32 on CPU, unless told otherwise."""
    if requested != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
