"""FIRST-style single-token listwise reranking: the first answer token's logits rank the window.

A listwise model asked for "[C] > [A] > ..." puts most of its ranking into the very first token
it would generate: the logit of each passage label there orders the whole window. FIRST (Reddy
et al., 2024) uses that and skips the decoding loop entirely: one forward pass per window, hidden
state of the last prompt position only, projected onto the passage-label rows of the LM head.
Windows slide back to front as in RankGPT; every window shares the instruction + query prefix,
computed once by the prefix engine. Per-document scores come from the final rank.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from models.llm.loading import CausalLM
from models.rerankers.base import ScoresFromRank, truncate_text
from models.rerankers.listwise import RANKGPT_SYSTEM, window_starts
from models.rerankers.llm_base import LLMReranker, split_prompt, suffix_ids

LABELS = string.ascii_uppercase  # single tokens in every common vocabulary, unlike "[13]"


class FirstTokenReranker(ScoresFromRank, LLMReranker):
    """Each window ordered by the label logits at the first answer position (no generation)."""

    method = "first"

    def __init__(self, lm: CausalLM, *, window: int = 20, step: int = 10, max_passage_tokens: int = 100,
                 **kwargs: object) -> None:
        if not 2 <= window <= len(LABELS):
            raise ValueError(f"window must be between 2 and {len(LABELS)} (one letter label per passage)")
        window_starts(0, window, step)  # validates window and step
        super().__init__(lm, **kwargs)  # type: ignore[arg-type]
        self.window, self.step, self.max_passage_tokens = window, step, max_passage_tokens

    def _window_logits(self, query: str, passages: Sequence[str]) -> list[float]:
        n = len(passages)
        user = (f"I will provide you with {n} passages, each indicated by a letter identifier []. Rank the "
                f"passages based on their relevance to query: {query}.\n\n{{varying}}\n\nSearch Query: {query}.\n"
                f"Rank the {n} passages above based on their relevance to the search query, most relevant "
                "first, in the format [] > [], e.g., [B] > [A]. Only respond with the ranking.")
        parts = split_prompt(self.lm, RANKGPT_SYSTEM, user, "[")
        listing = "\n".join(f"[{LABELS[i]}] {p}" for i, p in enumerate(passages))
        labels = [self.lm.label_ids((LABELS[i], f" {LABELS[i]}")) for i in range(n)]
        log_probs = self.label_log_probs(parts.prefix_ids, [suffix_ids(self.lm, parts, listing)], labels)
        return log_probs[0].tolist()

    def rank(self, query: str, documents: Sequence[str]) -> list[int]:
        passages = [truncate_text(self.tokenizer, " ".join(d.split()), self.max_passage_tokens)
                    for d in documents]
        order = list(range(len(documents)))
        for start, end in window_starts(len(order), self.window, self.step):
            members = order[start:end]
            if len(members) < 2:
                continue
            logits = self._window_logits(query, [passages[i] for i in members])
            order[start:end] = [members[i] for i in sorted(range(len(members)), key=lambda i: (-logits[i], i))]
        return order
