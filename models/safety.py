"""Refuse model weights that execute code when loaded: only safetensors and GGUF are accepted.

`torch.load` on a `.bin`/`.pt`/`.ckpt` file unpickles it, and unpickling runs arbitrary code, so a
model path an operator (or a request) points at must not be loaded that way. Loaders call
`check_safe_weights` on local files before handing them to transformers/sentence-transformers, and
pass `use_safetensors=True` so the library itself never falls back to pickle either.
"""

from __future__ import annotations

from pathlib import Path

SAFE_SUFFIXES = frozenset({".safetensors", ".gguf"})
# Files `torch.load`/`pickle` would open; their mere presence is fine if a safe copy sits beside them.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})


class UnsafeWeights(ValueError):
    """A model folder or file offers its weights only in a format that runs code when loaded."""


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    safe, unsafe = [], []
    for path in folder.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        suffix = path.suffix.lower()
        if suffix in SAFE_SUFFIXES:
            safe.append(path)
        elif suffix in PICKLE_SUFFIXES and path.name != "training_args.bin":
            unsafe.append(path)
    return safe, unsafe


def check_safe_weights(path: str | Path) -> None:
    """Raise `UnsafeWeights` unless every weights folder under `path` has safetensors or GGUF weights.

    A folder (or sub-module folder, as sentence-transformers' `2_Dense/`) holding pickle weights and
    no safe copy is refused; folders without weights (tokenizer, pooling config) are fine. A path
    that is not local (a hub id) is left to the loader, which is called with `use_safetensors=True`.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() not in SAFE_SUFFIXES:
            raise UnsafeWeights(f"{p}: only .safetensors and .gguf weights are loaded, not {p.suffix or 'this'}")
        return
    if not p.is_dir():
        return
    safe, unsafe = _weight_files(p)
    safe_dirs = {f.parent for f in safe}
    refused = sorted(str(f.relative_to(p)) for f in unsafe if f.parent not in safe_dirs)
    if refused:
        raise UnsafeWeights(
            f"{p}: weights only in pickle formats ({', '.join(refused[:5])}); convert them to safetensors "
            "(loading pickle files can run arbitrary code)"
        )
