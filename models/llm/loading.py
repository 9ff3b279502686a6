"""Causal-LM loading for rerankers: hub name, local directory or GGUF file, one code path.

A reranker needs three things from a causal LM: the model, its tokenizer, and a way to turn a
(system, user) pair into the exact text the model was tuned on. `CausalLM` bundles them so the
reranking methods never touch `transformers` loading details.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.device import pick_device, pick_dtype
from models.llm import gguf_cache
from models.resolve import ResolvedModel, resolve_model
from models.safety import check_safe_weights

logger = logging.getLogger(__name__)

DEFAULT_RERANK_LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class CausalLM:
    """A loaded causal LM with its tokenizer and prompt rendering."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    source: str = ""  # where the weights came from (package, hub, GGUF cache entry), for logs and tests

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, system: str, user: str, assistant_start: str = "") -> str:
        """The prompt text up to where the model's answer begins.

        Chat models get their own template (system turn folded into the user turn when the
        template has no system role); base models get a plain completion layout.
        """
        if self.has_chat_template:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates that reject a system role (Gemma's raise) get it inline
                merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
                text = self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            return str(text) + assistant_start
        return f"{system}\n\n{user}\n\nAnswer:{assistant_start}"

    def encode(self, text: str, *, leading: bool = False) -> list[int]:
        """Token ids of `text` with no special tokens, plus BOS when `leading` and the model wants one.

        Prompts are tokenized in pieces (shared prefix, per-document suffix); only the first piece
        may carry BOS, and only if the tokenizer would add it and the template did not.
        """
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if leading and bos is not None and (not ids or ids[0] != bos) and self._adds_bos():
            ids = [bos, *ids]
        return ids

    def _adds_bos(self) -> bool:
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(probe) and probe[0] == self.tokenizer.bos_token_id

    def label_ids(self, variants: Sequence[str]) -> list[int]:
        """Ids of the spellings of one answer label that are a single token ("yes", " yes", "Yes").

        A label's probability is summed over its spellings, so the score does not hinge on
        whether this tokenizer puts the answer's leading space into the token.
        """
        ids: list[int] = []
        for text in variants:
            tok = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(tok) == 1 and tok[0] not in ids:
                ids.append(int(tok[0]))
        if not ids:
            raise ValueError(f"no spelling of {list(variants)} is a single token for {self.name}")
        return ids


def load_causal_lm(
    name: str = DEFAULT_RERANK_LLM,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    gguf_cache: bool = True,
    gguf_cache_dir: Path | None = None,
) -> CausalLM:
    """Load `name` (hub id, alias, directory or .gguf path) for inference in eval mode.

    GGUF files are de-quantised by transformers; with `gguf_cache` the converted model is kept in
    `gguf_cache_dir` (default `gguf_cache.default_cache_dir()`) and later loads read it instead
    (`models.llm.gguf_cache`). `attn_implementation` selects a registered attention function
    (e.g. "sdpa", "eager", or the kernels' "rrs_fused").
    """
    resolved = resolve_model(name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    if resolved.is_local:  # never unpickle weights from a user-supplied path
        check_safe_weights(Path(resolved.path) / resolved.gguf_file if resolved.gguf_file else resolved.path)
    source = resolved.source
    if resolved.gguf_file and resolved.is_local and gguf_cache:
        model, tokenizer, source = _load_gguf_cached(resolved, torch_dtype, attn_implementation, gguf_cache_dir)
    else:
        model, tokenizer = _from_pretrained(resolved.path, torch_dtype, attn_implementation, resolved.gguf_file)
    model.to(dev)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded causal LM %s from %s (%s, %s, %s)", name, source, dev, torch_dtype, type(model).__name__)
    return CausalLM(name=name, model=model, tokenizer=tokenizer, device=dev, dtype=torch_dtype, source=source)


def _from_pretrained(
    path: str | Path, dtype: torch.dtype, attn_implementation: str | None, gguf_file: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs: dict[str, object] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if not gguf_file:
        kwargs["use_safetensors"] = True
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    return model, tokenizer


def _load_gguf_cached(
    resolved: ResolvedModel, dtype: torch.dtype, attn_implementation: str | None, cache_dir: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """From the cache entry of this GGUF file when there is a good one; else convert and store one."""
    assert resolved.gguf_file is not None
    gguf_path = Path(resolved.path) / resolved.gguf_file
    entry = gguf_cache.entry_dir(cache_dir or gguf_cache.default_cache_dir(), gguf_path)
    if gguf_cache.cached_entry(entry):
        try:
            model, tokenizer = _from_pretrained(entry, dtype, attn_implementation)
            return model, tokenizer, f"GGUF cache {entry}"
        except Exception as exc:  # a damaged entry: drop it and convert again
            logger.warning("GGUF cache entry %s did not load (%s: %s); converting %s again",
                           entry, type(exc).__name__, exc, gguf_path)
            gguf_cache.discard(entry)
    # The entry holds the de-quantised float32 values; other dtypes are cast from them, as on a hit.
    model, tokenizer = _from_pretrained(resolved.path, torch.float32, attn_implementation, resolved.gguf_file)
    stored = gguf_cache.store(entry, model, tokenizer, gguf_path)
    if dtype != torch.float32:
        model.to(dtype)
    return model, tokenizer, f"{resolved.source} GGUF (cached to {stored})" if stored else resolved.source
