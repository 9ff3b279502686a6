"""Last-position hidden states of (shared prefix + suffix) sequences, prefix computed once.

Pointwise, graded and pairwise reranking all score many sequences that share one instruction +
query prefix and differ only in the document part, and all they need is the hidden state of the
last real token. Three engines compute exactly that:

- `PrefixScorer` ("cache"): the prefix runs once with `use_cache`; its key/value cache is
  expanded to each batch of suffixes, which run with position ids continuing after the prefix.
  Suffixes are sorted by length and batched under a token budget so padding stays small; they are
  right-padded, so under causal attention no real token ever sees a pad and no mask is needed.
- `PaddedScorer` ("padded"): every (prefix + suffix) sequence runs in full, right-padded. The
  baseline the benchmark compares against, and the reference the cache engine is tested against.
- `PackedPrefixScorer` ("packed", `models/llm/packed_scoring.py`): one varlen launch on GPU.

Only the final-norm hidden state at the last real position is kept; `label_logits` then projects
it onto the few LM-head rows a method needs (yes/no, grades, passage labels), never the full
vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_BUDGET = 4096  # suffix tokens (padding included) per forward pass


class HiddenStateScorer(Protocol):
    """What every engine provides: one final hidden state per (prefix + suffix) sequence."""

    def last_hidden_states(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor: ...


def length_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size fits `token_budget`.

    Sorted by length (ties by index, so the grouping is a pure function of the lengths); a
    sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the newest member is the longest: padded size = count * its length.
        if current and (len(current) + 1) * lengths[i] > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _right_padded(seqs: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    last = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
    return ids.to(device), last.to(device)


def _pad_id(model: PreTrainedModel) -> int:
    pad = model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    return int(pad or 0)


def _check(prefix_ids: list[int], suffixes: list[list[int]]) -> None:
    if not prefix_ids:
        raise ValueError("prefix_ids is empty: the shared prefix must hold at least one token")
    if any(not s for s in suffixes):
        raise ValueError("every suffix must hold at least one token")


class PaddedScorer:
    """Baseline engine: each full (prefix + suffix) sequence runs independently, right-padded."""

    def __init__(self, model: PreTrainedModel, token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        self.model = model
        self.token_budget = token_budget
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def last_hidden_states(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor:
        _check(prefix_ids, suffixes)
        hidden_size = self.model.config.get_text_config().hidden_size
        dtype = next(self.model.parameters()).dtype
        out = torch.empty((len(suffixes), hidden_size), dtype=dtype, device=self.device)
        full = [prefix_ids + s for s in suffixes]
        for batch in length_batches([len(f) for f in full], self.token_budget):
            ids, last = _right_padded([full[i] for i in batch], _pad_id(self.model), self.device)
            hidden = self.model.model(input_ids=ids, use_cache=False).last_hidden_state
            out[batch] = hidden[torch.arange(len(batch), device=self.device), last]
        return out


class PrefixScorer:
    """Cache engine: the shared prefix runs once; suffix batches attend to its expanded KV cache."""

    def __init__(self, model: PreTrainedModel, token_budget: int = DEFAULT_TOKEN_BUDGET) -> None:
        self.model = model
        self.token_budget = token_budget
        self.device = next(model.parameters()).device
        self._fallback = PaddedScorer(model, token_budget)

    def _prefix_fits_cache(self, prefix_len: int) -> bool:
        # A sliding-window layer keeps only its last window-1 keys; past that the expanded
        # cache would no longer describe the prefix, so such prefixes take the full path.
        window = getattr(self.model.config.get_text_config(), "sliding_window", None)
        return window is None or prefix_len < window - 1

    @torch.inference_mode()
    def last_hidden_states(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor:
        _check(prefix_ids, suffixes)
        if not self._prefix_fits_cache(len(prefix_ids)):
            return self._fallback.last_hidden_states(prefix_ids, suffixes)
        config = self.model.config
        prefix = torch.tensor([prefix_ids], dtype=torch.long, device=self.device)
        prefix_cache = self.model.model(input_ids=prefix, use_cache=True).past_key_values
        layers = [(layer.keys, layer.values) for layer in prefix_cache.layers]
        p = len(prefix_ids)
        hidden_size = config.get_text_config().hidden_size
        out = torch.empty((len(suffixes), hidden_size), dtype=layers[0][0].dtype, device=self.device)
        for batch in length_batches([len(s) for s in suffixes], self.token_budget):
            ids, last = _right_padded([suffixes[i] for i in batch], _pad_id(self.model), self.device)
            b, width = ids.shape
            cache = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in layers],
                config=config,
            )
            positions = torch.arange(p, p + width, device=self.device).unsqueeze(0).expand(b, -1)
            hidden = self.model.model(
                input_ids=ids, past_key_values=cache, position_ids=positions, use_cache=True,
            ).last_hidden_state
            out[batch] = hidden[torch.arange(b, device=self.device), last]
        return out


ENGINES = ("cache", "packed", "padded")


def make_scorer(model: PreTrainedModel, engine: str = "auto",
                token_budget: int | None = None) -> HiddenStateScorer:
    """The engine by name; `auto` is packed on CUDA when its kernels import, else the cache engine.

    `token_budget` None keeps each engine's own default (packed batches carry no padding, so theirs
    is larger).
    """
    device = next(model.parameters()).device
    if engine == "auto":
        engine = "cache"
        if device.type == "cuda":
            try:
                import models.llm.packed_scoring  # noqa: F401
                engine = "packed"
            except ImportError as exc:  # Triton or the kernels missing: the cache engine is exact too
                logger.info("packed scoring unavailable (%s); using the prefix-cache engine", exc)
    if engine == "cache":
        return PrefixScorer(model, token_budget or DEFAULT_TOKEN_BUDGET)
    if engine == "padded":
        return PaddedScorer(model, token_budget or DEFAULT_TOKEN_BUDGET)
    if engine == "packed":
        from models.llm.packed_scoring import PackedPrefixScorer

        return PackedPrefixScorer(model, **({"token_budget": token_budget} if token_budget else {}))
    raise ValueError(f"unknown scoring engine {engine!r}; valid: auto, {', '.join(ENGINES)}")


@torch.inference_mode()
def label_logits(model: PreTrainedModel, hidden: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Logits of only `token_ids` (n, len(token_ids)) from final hidden states, in fp32.

    Gathers the needed LM-head rows instead of computing the full-vocabulary projection, and
    applies the final logit soft-capping of models that use it (Gemma 2) so values match `logits`.
    """
    head = model.get_output_embeddings()
    rows = head.weight[torch.as_tensor(list(token_ids), device=head.weight.device)]
    logits = hidden.float() @ rows.float().T
    bias = getattr(head, "bias", None)
    if bias is not None:
        logits = logits + bias[list(token_ids)].float()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
