"""Diversified results: maximal marginal relevance (Carbonell and Goldstein, 1998).

A plain top-k repeats itself when a collection holds near-copies (the same passage in several
documents, versions of one page): each copy scores as well as the first. MMR picks greedily the
candidate with the best `(1 - diversity) * sim(query, d) - diversity * max sim(d, picked)`, so a
document as close to an already picked one as to the query loses its place to a new one.

Both similarities are cosines on the stored vectors, whatever the collection's metric, so that
`diversity` weighs like against like (an inner product or a squared distance would put the two
terms on different scales).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 0.5 and above gave up more relevance than they removed redundancy in benchmarks/diversity.py: MiniLM
# cosines sit close together, so an equal weight on redundancy outranks relevance (docs/BENCHMARKS.md).
DEFAULT_DIVERSITY = 0.3
MMR_CANDIDATE_FACTOR = 5  # default pool: this many candidates per hit ...
MMR_MIN_CANDIDATES = 50  # ... and at least this many
MAX_MMR_CANDIDATES = 1000


@dataclass(frozen=True)
class Diversify:
    """MMR over the best `candidates` (None: the default pool for the request's top_k)."""

    diversity: float = DEFAULT_DIVERSITY
    candidates: int | None = None

    def pool(self, top_k: int) -> int:
        if self.candidates is not None:
            return self.candidates
        return min(MAX_MMR_CANDIDATES, max(MMR_MIN_CANDIDATES, MMR_CANDIDATE_FACTOR * top_k))


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def mmr_order(query: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Indices of `vectors` (candidates, best first) picked by MMR, in pick order, at most k.

    Ties go to the earlier candidate, so `diversity` 0 keeps the incoming order when it is the
    query-similarity order.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity: must be between 0 and 1, got {diversity}")
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    v = _unit(np.asarray(vectors, dtype=np.float64))
    q = _unit(np.asarray(query, dtype=np.float64).reshape(-1))
    relevance = (1.0 - diversity) * (v @ q)
    closest = np.full(n, -np.inf)  # max similarity to a picked document; -inf before the first pick
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        gain = np.where(free, relevance - diversity * penalty, -np.inf)
        best = int(np.argmax(gain))  # argmax returns the first of equal values
        picked.append(best)
        free[best] = False
        closest = np.maximum(closest, v @ v[best])
    return picked
