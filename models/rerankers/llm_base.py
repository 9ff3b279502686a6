"""Shared machinery of the causal-LM rerankers: prompt splitting and label probabilities.

Every LLM method here builds prompts of the form `prefix + varying part + tail`, where the prefix
(instruction + query) is the same for all documents of a request. `split_prompt` renders the
model's chat template once with a sentinel in place of the varying part and cuts there, so the
prefix is tokenized once and handed to the hidden-state engine as the shared prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.llm.loading import CausalLM
from models.llm.prefix_scoring import HiddenStateScorer, PrefixGroup, label_logits, make_scorer
from models.rerankers.base import Reranker

_SENTINEL = "\u2063RRS-VARYING-PART\u2063"


@dataclass(frozen=True)
class PromptParts:
    """Token ids of the shared prefix, and the text around every varying part."""

    prefix_ids: list[int]
    lead: str  # whitespace moved from the end of the prefix
    tail: str  # the rest of the prompt after the varying part


def split_prompt(lm: CausalLM, system: str, user: str, assistant_start: str) -> PromptParts:
    """Render `user` (holding `{varying}` once) and cut the prompt where the varying part starts.

    Whitespace right before the cut moves into the varying part, so a document is tokenized with
    its leading space attached, as in the full prompt, instead of a lone space token.
    """
    if user.count("{varying}") != 1:
        raise ValueError("the user template must contain {varying} exactly once")
    text = lm.render(system, user.replace("{varying}", _SENTINEL), assistant_start)
    head, tail = text.split(_SENTINEL)
    stripped = head.rstrip(" ")
    return PromptParts(lm.encode(stripped, leading=True), head[len(stripped):], tail)


def suffix_ids(lm: CausalLM, parts: PromptParts, varying: str) -> list[int]:
    """Token ids of one varying part (a document, a passage pair, a window) plus the prompt tail."""
    return lm.encode(parts.lead + varying + parts.tail)


class LLMReranker(Reranker):
    """A reranker driven by one causal LM, with the hidden-state engine chosen once."""

    def __init__(self, lm: CausalLM, *, engine: str = "auto", token_budget: int | None = None,
                 max_doc_tokens: int = 512) -> None:
        self.lm = lm
        self.model_name = lm.name
        self.tokenizer = lm.tokenizer
        self.scorer: HiddenStateScorer = make_scorer(lm.model, engine, token_budget)
        self.max_doc_tokens = max_doc_tokens

    def clip(self, document: str) -> str:
        """A document cut to the per-document token cap, so one long input cannot blow the budget."""
        return self.truncate(document, self.max_doc_tokens)

    def label_log_probs(self, prefix_ids: list[int], suffixes: list[list[int]],
                        labels: Sequence[Sequence[int]]) -> torch.Tensor:
        """(n, len(labels)) log-probabilities over the answer labels at each sequence's last position.

        Each label's mass is the sum over its single-token spellings; the distribution is then
        renormalised over the labels only (what the Qwen3-Reranker and monoT5 recipes do).
        """
        return self.label_log_probs_groups([(prefix_ids, suffixes)], labels)[0]

    def label_log_probs_groups(self, groups: Sequence[PrefixGroup],
                               labels: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """`label_log_probs` for several (prefix, suffixes) groups, batched in one engine call."""
        flat = [t for group in labels for t in group]
        hidden = torch.cat(self.scorer.last_hidden_states_groups(groups))
        logits = label_logits(self.lm.model, hidden, flat)
        grouped, start = [], 0
        for group in labels:
            grouped.append(torch.logsumexp(logits[:, start:start + len(group)], dim=1))
            start += len(group)
        log_probs = torch.log_softmax(torch.stack(grouped, dim=1), dim=1)
        return list(log_probs.split([len(suffixes) for _, suffixes in groups]))
