"""Where rrs keeps what it derives from models on disk (converted GGUF models, ONNX exports)."""

from __future__ import annotations

import os
from pathlib import Path


def rrs_cache_dir(kind: str) -> Path:
    """`$XDG_CACHE_HOME/rrs/<kind>` (else `~/.cache/rrs/<kind>`), beside where the hub keeps its own."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rrs" / kind
