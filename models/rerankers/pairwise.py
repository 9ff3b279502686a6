"""Pairwise ranking prompting (PRP), sorting-based: O(n log n) comparisons, both orders each.

PRP asks "which of passage A and passage B is more relevant?" and is robust where pointwise
judges are uncalibrated and listwise ones lose track of long lists. Each comparison is asked in
both orders and averaged, cancelling the model's position bias: P(i > j) = (P(A | i, j) +
P(B | j, i)) / 2, each read from the A/B label logits of one forward pass (no generation).

The sort is a bottom-up merge sort whose merges advance in lockstep: every step gathers the one
pending comparison of each active merge and scores them all (both orders) in one batched call
through the prefix engine, which computes the instruction + query prefix once. The first-stage
order is the initial order, so ties keep it. Per-document scores come from the final rank.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.rerankers.base import ScoresFromRank
from models.rerankers.llm_base import LLMReranker, split_prompt, suffix_ids

PRP_SYSTEM = "You are an expert at judging which of two passages better answers a search query."


class PairwiseReranker(ScoresFromRank, LLMReranker):
    """PRP-Sorting with batched, order-symmetrised comparisons."""

    method = "pairwise"

    def _preferences(self, query: str, passages: Sequence[str], pairs: list[tuple[int, int]]) -> list[float]:
        """P(first beats second) for each pair, averaged over both presentation orders."""
        user = (f'Given a query "{query}", which of the following two passages is more relevant to the '
                'query?\n\n{varying}\n\nOutput Passage A or Passage B:')
        parts = split_prompt(self.lm, PRP_SYSTEM, user, "Passage")
        shown = [(i, j) for i, j in pairs] + [(j, i) for i, j in pairs]
        suffixes = [suffix_ids(self.lm, parts, f'Passage A: "{passages[a]}"\n\nPassage B: "{passages[b]}"')
                    for a, b in shown]
        labels = [self.lm.label_ids(("A", " A")), self.lm.label_ids(("B", " B"))]
        probs = self.label_log_probs(parts.prefix_ids, suffixes, labels).exp().tolist()
        k = len(pairs)
        return [(probs[p][0] + probs[k + p][1]) / 2 for p in range(k)]

    def rank(self, query: str, documents: Sequence[str]) -> list[int]:
        passages = [self.clip(" ".join(d.split())) for d in documents]
        beats: dict[tuple[int, int], bool] = {}
        runs: list[list[int]] = [[i] for i in range(len(documents))]
        while len(runs) > 1:
            merges = [_Merge(runs[k], runs[k + 1]) for k in range(0, len(runs) - 1, 2)]
            carried = [runs[-1]] if len(runs) % 2 else []
            while pending := [m for m in merges if not m.done]:
                unknown = [m.next_pair() for m in pending if m.next_pair() not in beats]
                for pair, p in zip(unknown, self._preferences(query, passages, unknown), strict=True):
                    beats[pair] = p >= 0.5  # the left one came first in the input order: ties keep it
                for m in pending:
                    m.advance(beats[m.next_pair()])
            runs = [m.result() for m in merges] + carried
        return runs[0] if runs else []


class _Merge:
    """One merge of two sorted runs, advanced one comparison at a time."""

    def __init__(self, left: list[int], right: list[int]) -> None:
        self.left, self.right, self.out = left, right, []
        self.i = self.j = 0

    @property
    def done(self) -> bool:
        return self.i >= len(self.left) or self.j >= len(self.right)

    def next_pair(self) -> tuple[int, int]:
        return self.left[self.i], self.right[self.j]

    def advance(self, left_wins: bool) -> None:
        if left_wins:
            self.out.append(self.left[self.i])
            self.i += 1
        else:
            self.out.append(self.right[self.j])
            self.j += 1

    def result(self) -> list[int]:
        return self.out + self.left[self.i:] + self.right[self.j:]
