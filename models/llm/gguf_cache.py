"""A disk cache of de-quantised GGUF models, so only the first load pays for the conversion.

transformers reads a GGUF file three times (config, tokenizer, weights) through the `gguf` package's
pure-Python field parser, then de-quantises every tensor: ~35 s for the 98 MB SmolLM2 file on one
CPU core, for a model that loads from safetensors in under a second. The first load therefore
writes the converted model (float32 safetensors, config, tokenizer with its chat template) to a
folder named by the GGUF file's SHA-256 and the transformers version; later loads read that folder.

Entries are written to a temporary folder and renamed into place, so a concurrent or killed writer
never leaves a half-written entry under the final name; an entry that fails to load is removed and
rebuilt from the GGUF file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from models.cache_dirs import rrs_cache_dir

if TYPE_CHECKING:  # transformers is imported where it is used: Settings imports this module
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

COMPLETE = "rrs-gguf-cache.json"  # written last: an entry without it is not used


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/rrs/gguf` (else `~/.cache/rrs/gguf`)."""
    return rrs_cache_dir("gguf")


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def entry_dir(cache_dir: Path, gguf_path: Path) -> Path:
    """The entry for this exact file under this transformers version (its conversion may change)."""
    import transformers

    digest = file_digest(gguf_path)[:24]
    return Path(cache_dir) / f"{gguf_path.stem}-{digest}-transformers-{transformers.__version__}"


def cached_entry(entry: Path) -> Path | None:
    """`entry` if it was written completely, else None."""
    return entry if (entry / COMPLETE).is_file() else None


def discard(entry: Path) -> None:
    """Remove an entry that failed to load (moved aside first, so readers never see it half-deleted)."""
    trash = entry.with_name(f".trash-{uuid.uuid4().hex}")
    try:
        entry.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def store(entry: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: Path) -> Path | None:
    """Write a converted model as an entry; returns it, or None when the cache cannot be written.

    `model` must hold float32 weights: the entry is the GGUF's de-quantised values, which every
    dtype is then cast from on load (the same rounding as a direct GGUF load in that dtype).
    """
    import transformers
    from safetensors.torch import save_model

    tmp = entry.with_name(f".tmp-{entry.name}-{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        # save_pretrained refuses models loaded from GGUF ("quantized"), though their weights are plain
        # tensors by now: write the weights (shared tensors such as tied embeddings once) and a config
        # without the quantisation marker.
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE).write_text(json.dumps({"source": str(source), "transformers": transformers.__version__}))
        try:
            tmp.rename(entry)
        except OSError:  # another process stored the same entry first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
        return cached_entry(entry)
    except OSError as exc:
        log.warning("could not write the GGUF cache entry %s (%s); later loads convert again", entry, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return None
