"""Packed shared-prefix scoring: all suffixes in one varlen batch attending one prefix's K/V in place.

The prefix runs once; its per-layer keys/values stay where the cache put them. Then every suffix
is laid back to back in a single row (no padding), with position ids continuing after the
prefix, and each layer's attention is the varlen kernel (`kernels.attention`, through the
`rrs_fused` transformers attention implementation): sequence i attends the prefix in full and
itself causally. Only the final-norm hidden state at each suffix's last token is returned.
Same contract as `models.llm.prefix_scoring.PrefixScorer.last_hidden_states`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from kernels.attention.dispatch import AttentionBackend
from kernels.attention.hf import ATTN_IMPLEMENTATION, PackedAttentionBatch, packed_attention, register_rrs_attention
from models.llm.prefix_scoring import (
    HiddenStateScorer,
    PrefixGroup,
    PrefixScorer,
    check_sequences,
    flatten_groups,
    split_by_group,
)

logger = logging.getLogger(__name__)

DEFAULT_PACKED_TOKEN_BUDGET = 16384  # suffix tokens per forward pass; no padding counts against it


def packed_chunks(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Consecutive index runs whose total length fits `token_budget` (a longer sequence runs alone)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if current and used + n > token_budget:
            chunks.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        chunks.append(current)
    return chunks


class PackedPrefixScorer(HiddenStateScorer):
    """Hidden state at each suffix's last token, prefix computed once, suffixes packed without padding.

    Switches `model` to the `rrs_fused` attention implementation, which for ordinary (unpacked)
    calls computes exactly what SDPA does, so other users of the same model are unaffected.
    """

    def __init__(self, model: PreTrainedModel, token_budget: int = DEFAULT_PACKED_TOKEN_BUDGET,
                 backend: AttentionBackend = "auto") -> None:
        self.model = model
        self.token_budget = token_budget
        self.backend: AttentionBackend = backend
        self.device = next(model.parameters()).device
        register_rrs_attention()
        if model.config._attn_implementation != ATTN_IMPLEMENTATION:
            logger.info("switching %s attention from %s to %s", type(model).__name__,
                        model.config._attn_implementation, ATTN_IMPLEMENTATION)
            model.set_attn_implementation(ATTN_IMPLEMENTATION)
        self.sliding_window = getattr(model.config.get_text_config(), "sliding_window", None)

    @torch.inference_mode()
    def last_hidden_states_groups(self, groups: Sequence[PrefixGroup]) -> list[torch.Tensor]:
        """All prefixes in one packed pass, then all suffixes packed, each reading its group's prefix."""
        for prefix_ids, suffixes in groups:
            check_sequences(prefix_ids, suffixes)
        plens = [len(prefix_ids) for prefix_ids, _ in groups]
        longest = max(p + len(s) for (_, suffixes), p in zip(groups, plens, strict=True) for s in suffixes)
        if self.sliding_window is not None and longest > self.sliding_window - 1:
            # The kernel has no sliding window; the cache engine handles such models exactly.
            return PrefixScorer(self.model).last_hidden_states_groups(groups)

        dev = self.device
        prefix_ends = torch.tensor(plens).cumsum(0)
        cu_prefix = torch.cat([torch.zeros(1, dtype=torch.long), prefix_ends]).to(device=dev, dtype=torch.int32)
        prefix_ids = torch.tensor([t for p, _ in groups for t in p], dtype=torch.long, device=dev)
        prefix_pos = torch.cat([torch.arange(p) for p in plens]).to(dev)
        prefix_batch = PackedAttentionBatch(cu_seqlens=cu_prefix, max_seqlen=max(plens), backend=self.backend)
        with packed_attention(prefix_batch):  # each prefix attends only itself
            cache = self.model.model(input_ids=prefix_ids.unsqueeze(0), position_ids=prefix_pos.unsqueeze(0),
                                     use_cache=True).past_key_values
        # (1, kv_heads, prefix tokens, d) -> (tokens, kv_heads, d) views: read in place by every suffix.
        prefix_keys = [layer.keys[0].transpose(0, 1) for layer in cache.layers]
        prefix_values = [layer.values[0].transpose(0, 1) for layer in cache.layers]

        refs = flatten_groups(groups)
        suffixes = [groups[g][1][i] for g, i in refs]
        hidden_size = self.model.config.get_text_config().hidden_size
        out = torch.empty((len(refs), hidden_size), dtype=prefix_keys[0].dtype, device=dev)
        for chunk in packed_chunks([len(s) for s in suffixes], self.token_budget):
            lengths = [len(suffixes[k]) for k in chunk]
            members = [refs[k][0] for k in chunk]
            ids = torch.tensor([t for k in chunk for t in suffixes[k]], dtype=torch.long, device=dev)
            positions = torch.cat([torch.arange(plens[g], plens[g] + n) for g, n in zip(members, lengths,
                                                                                      strict=True)]).to(dev)
            ends = torch.tensor(lengths).cumsum(0)
            cu = torch.cat([torch.zeros(1, dtype=torch.long), ends]).to(device=dev, dtype=torch.int32)
            batch = PackedAttentionBatch(cu_seqlens=cu, max_seqlen=max(lengths), prefix_keys=prefix_keys,
                                         prefix_values=prefix_values, cu_prefix_lens=cu_prefix,
                                         prefix_group=torch.tensor(members, dtype=torch.int32, device=dev),
                                         backend=self.backend)
            with packed_attention(batch):
                hidden = self.model.model(input_ids=ids.unsqueeze(0), position_ids=positions.unsqueeze(0),
                                          use_cache=False).last_hidden_state[0]
            out[chunk] = hidden[(ends - 1).to(dev)]
        return split_by_group(out, groups)
