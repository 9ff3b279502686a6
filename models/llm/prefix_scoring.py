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
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_BUDGET = 4096  # suffix tokens (padding included) per forward pass on GPU
CPU_TOKEN_BUDGET = 2048  # CPU: 2-4k tokens per pass are equally fast, 8k is slower (benchmarks/cpu_batching.py)


def default_token_budget(model: PreTrainedModel) -> int:
    """The padded engines' tokens per forward pass for the device the model sits on."""
    return CPU_TOKEN_BUDGET if next(model.parameters()).device.type == "cpu" else DEFAULT_TOKEN_BUDGET


PrefixGroup = tuple[list[int], list[list[int]]]
"""One request's shared prefix ids and its suffixes (documents + prompt tail)."""


class HiddenStateScorer(ABC):
    """What every engine provides: one final hidden state per (prefix + suffix) sequence.

    `last_hidden_states_groups` takes several (prefix, suffixes) groups, typically the requests of
    several clients in flight at once, and batches their suffixes together; each group's prefix is
    still computed once.
    """

    def last_hidden_states(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor:
        """One group's hidden states, (len(suffixes), hidden)."""
        return self.last_hidden_states_groups([(prefix_ids, suffixes)])[0]

    @abstractmethod
    def last_hidden_states_groups(self, groups: Sequence[PrefixGroup]) -> list[torch.Tensor]: ...



def flatten_groups(groups: Sequence[PrefixGroup]) -> list[tuple[int, int]]:
    """(group, suffix) index of every suffix, in group order."""
    return [(g, i) for g, (_, suffixes) in enumerate(groups) for i in range(len(suffixes))]


def split_by_group(out: torch.Tensor, groups: Sequence[PrefixGroup]) -> list[torch.Tensor]:
    sizes = [len(suffixes) for _, suffixes in groups]
    return list(out.split(sizes))


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


def check_sequences(prefix_ids: list[int], suffixes: list[list[int]]) -> None:
    if not prefix_ids:
        raise ValueError("prefix_ids is empty: the shared prefix must hold at least one token")
    if any(not s for s in suffixes):
        raise ValueError("every suffix must hold at least one token")


class PaddedScorer(HiddenStateScorer):
    """Baseline engine: each full (prefix + suffix) sequence runs independently, right-padded."""

    def __init__(self, model: PreTrainedModel, token_budget: int | None = None) -> None:
        self.model = model
        self.token_budget = token_budget or default_token_budget(model)
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def last_hidden_states_groups(self, groups: Sequence[PrefixGroup]) -> list[torch.Tensor]:
        for prefix_ids, suffixes in groups:
            check_sequences(prefix_ids, suffixes)
        full = [groups[g][0] + groups[g][1][i] for g, i in flatten_groups(groups)]
        hidden_size = self.model.config.get_text_config().hidden_size
        dtype = next(self.model.parameters()).dtype
        out = torch.empty((len(full), hidden_size), dtype=dtype, device=self.device)
        for batch in length_batches([len(f) for f in full], self.token_budget):
            ids, last = _right_padded([full[i] for i in batch], _pad_id(self.model), self.device)
            hidden = self.model.model(input_ids=ids, use_cache=False).last_hidden_state
            out[batch] = hidden[torch.arange(len(batch), device=self.device), last]
        return split_by_group(out, groups)


class PrefixScorer(HiddenStateScorer):
    """Cache engine: each prefix runs once; suffix batches attend to the KV cache of their prefix.

    Suffixes of several groups share a batch: each row's prefix keys/values are placed
    right-aligned in a common cache, and the slots left of a shorter prefix are masked. Rotary
    positions come from each row's own position ids, so a row computes exactly what it would alone.
    """

    def __init__(self, model: PreTrainedModel, token_budget: int | None = None) -> None:
        self.model = model
        self.token_budget = token_budget or default_token_budget(model)
        self.device = next(model.parameters()).device
        self._fallback = PaddedScorer(model, self.token_budget)

    def _prefix_fits_cache(self, prefix_len: int) -> bool:
        # A sliding-window layer keeps only its last window-1 keys; past that the expanded
        # cache would no longer describe the prefix, so such prefixes take the full path.
        window = getattr(self.model.config.get_text_config(), "sliding_window", None)
        return window is None or prefix_len < window - 1

    def _prefix_layers(self, prefix_ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        prefix = torch.tensor([prefix_ids], dtype=torch.long, device=self.device)
        cache = self.model.model(input_ids=prefix, use_cache=True).past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]  # each (1, kv_heads, p, d)

    def _batch_cache(self, members: list[int], layers: list[list[tuple[torch.Tensor, torch.Tensor]]],
                     lengths: list[int], width: int) -> tuple[DynamicCache, torch.Tensor | None]:
        """The batch's KV cache and, when its rows' prefixes differ in length, the padding mask."""
        config = self.model.config
        b = len(members)
        if len(set(members)) == 1:  # one group: a view of its cache, no copy, no mask
            data = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in layers[members[0]]]
            return DynamicCache(ddp_cache_data=data, config=config), None
        longest = max(lengths[g] for g in members)
        data = []
        for layer in range(len(layers[members[0]])):
            k0, v0 = layers[members[0]][layer]
            keys = k0.new_zeros((b, k0.shape[1], longest, k0.shape[3]))
            values = v0.new_zeros((b, v0.shape[1], longest, v0.shape[3]))
            for row, g in enumerate(members):
                k, v = layers[g][layer]
                keys[row, :, longest - lengths[g]:] = k[0]
                values[row, :, longest - lengths[g]:] = v[0]
            data.append((keys, values))
        mask = None
        if any(lengths[g] != longest for g in members):
            mask = torch.ones((b, longest + width), dtype=torch.long, device=self.device)
            for row, g in enumerate(members):
                mask[row, : longest - lengths[g]] = 0
        return DynamicCache(ddp_cache_data=data, config=config), mask

    @torch.inference_mode()
    def last_hidden_states_groups(self, groups: Sequence[PrefixGroup]) -> list[torch.Tensor]:
        for prefix_ids, suffixes in groups:
            check_sequences(prefix_ids, suffixes)
        if not all(self._prefix_fits_cache(len(prefix_ids)) for prefix_ids, _ in groups):
            return self._fallback.last_hidden_states_groups(groups)
        layers = [self._prefix_layers(prefix_ids) for prefix_ids, _ in groups]
        lengths = [len(prefix_ids) for prefix_ids, _ in groups]
        refs = flatten_groups(groups)
        suffixes = [groups[g][1][i] for g, i in refs]
        hidden_size = self.model.config.get_text_config().hidden_size
        out = torch.empty((len(refs), hidden_size), dtype=layers[0][0][0].dtype, device=self.device)
        for batch in length_batches([len(s) for s in suffixes], self.token_budget):
            members = [refs[k][0] for k in batch]
            ids, last = _right_padded([suffixes[k] for k in batch], _pad_id(self.model), self.device)
            b, width = ids.shape
            cache, mask = self._batch_cache(members, layers, lengths, width)
            positions = torch.stack([torch.arange(lengths[g], lengths[g] + width, device=self.device)
                                     for g in members])
            hidden = self.model.model(
                input_ids=ids, past_key_values=cache, position_ids=positions, attention_mask=mask,
                use_cache=True,
            ).last_hidden_state
            out[batch] = hidden[torch.arange(b, device=self.device), last]
        return split_by_group(out, groups)


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
        return PrefixScorer(model, token_budget)
    if engine == "padded":
        return PaddedScorer(model, token_budget)
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
