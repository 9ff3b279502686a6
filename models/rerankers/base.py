"""What every reranking method provides: one relevance score per document, higher is better."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from transformers import PreTrainedTokenizerBase


def order_by_score(scores: Sequence[float]) -> list[int]:
    """Document indices by descending score; ties keep input order (first-stage order wins)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def scores_from_order(order: Sequence[int]) -> list[float]:
    """Per-document scores in (0, 1] from a ranking: 1 for the top, evenly spaced below.

    Listwise and pairwise methods produce an order, not a score; a rank-derived score lets the
    API and the search cascade treat them like every other method.
    """
    n = len(order)
    scores = [0.0] * n
    for rank, index in enumerate(order):
        scores[index] = (n - rank) / n
    return scores


def truncate_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """`text` cut after its first `max_tokens` tokens, at the original characters (no re-decoding)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]] if max_tokens > 0 else ""


class Reranker(ABC):
    """A reranking method bound to its model(s)."""

    method: ClassVar[str]
    model_name: str
    tokenizer: PreTrainedTokenizerBase | None = None

    @abstractmethod
    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One score per document, in input order; higher means more relevant."""

    def rank(self, query: str, documents: Sequence[str]) -> list[int]:
        """Document indices, most relevant first; every index exactly once."""
        return order_by_score(self.score(query, documents))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` for this method's model (words when it exposes no tokenizer)."""
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to `max_tokens` tokens of this method's model (words without a tokenizer)."""
        if self.tokenizer is None:
            words = text.split()
            return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
        return truncate_text(self.tokenizer, text, max_tokens)


class ScoresFromRank:
    """Mixin for methods that produce an order (listwise, pairwise): scores derived from the rank."""

    def rank(self, query: str, documents: Sequence[str]) -> list[int]:
        raise NotImplementedError

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        return scores_from_order(self.rank(query, documents)) if documents else []
