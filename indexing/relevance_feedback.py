"""Searching with examples: a query vector moved towards documents a user liked and away from the
ones they did not (Rocchio's relevance feedback), or built from the examples alone ("more like
these, less like those").

    q' = alpha * q + beta * mean(liked) - gamma * mean(unliked)

with the textbook weights (alpha 1, beta 0.75, gamma 0.15: Manning, Raghavan & Schuetze, ch. 9),
which weigh what a user skipped far less than what they chose, since a skipped document is often
just less relevant, not off topic. Without a query, q' is beta * mean(liked) - gamma * mean(unliked).
For cosine collections every vector is normalised first, so each example weighs the same whatever
its length; `ip` and `l2` collections average the vectors as stored.
"""

from __future__ import annotations

import numpy as np

from indexing.errors import InvalidDocument

ALPHA, BETA, GAMMA = 1.0, 0.75, 0.15
MAX_EXAMPLES = 64  # liked plus unliked documents in one search


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rocchio(query: np.ndarray | None, liked: np.ndarray, unliked: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """The moved query vector; `liked`/`unliked` are (n, dim) arrays, either may be empty."""
    if query is None and not len(liked):
        raise InvalidDocument("like: a search without a query needs at least one liked document")
    norm = _unit if metric == "cosine" else (lambda x: x)
    parts: list[np.ndarray] = []
    if query is not None:
        query = np.asarray(query, np.float64).reshape(-1)
        if metric == "cosine" and not np.linalg.norm(query) > 0:
            raise InvalidDocument("vector: zero vector has no cosine similarity")
        parts.append(ALPHA * norm(query))
    if len(liked):
        parts.append(BETA * norm(np.asarray(liked, np.float64)).mean(axis=0))
    if len(unliked):
        parts.append(-GAMMA * norm(np.asarray(unliked, np.float64)).mean(axis=0))
    moved = np.sum(parts, axis=0)
    scale = sum(float(np.linalg.norm(p)) for p in parts)
    if not np.isfinite(moved).all() or np.linalg.norm(moved) <= 1e-6 * scale:
        raise InvalidDocument("unlike: the unliked documents cancel the query and the liked ones out")
    return moved.astype(np.float32)
