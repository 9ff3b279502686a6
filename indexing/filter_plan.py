"""How a filtered dense search finds its hits.

A filter matching few documents is answered exactly: their vector ids come out of SQLite and the
query is scored against just those vectors. A broad one is not worth reading whole (reading an 80 % filter's
ids and searching under their bitmap took 13x longer in `benchmarks.filtered_search`): the ANN index
is searched without it, deep enough that k of the candidates should pass, and only those
candidates are checked against the filter (post-filtering). Depth comes from how many documents
are known to match, then from how many candidates actually passed; a filter that passes too few
(one the query's neighbourhood avoids) falls back to reading every match.

Counting stops where reading stops: past `exact_filter_max` matches a search reports "at least"
that many unless the request asks for the exact count (one more pass over the filter's index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_FILTER_MAX = 4096  # fewer matching documents than this: exact search over them
POST_FILTER_FIRST_DEPTH = 256  # the first unfiltered search goes at most this deep (unless k needs more)
POST_FILTER_MAX_DEPTH = 4096  # deeper than this, reading every match is cheaper
OVERFETCH = 2.0  # search twice the depth the pass rate predicts: rows vary around the average
FILTERED_EF_MAX = 1024  # the widest HNSW beam a bitmap-filtered search is given by default
# Ranking one more unfiltered candidate and testing it against the filter costs about as much as
# reading this many matching ids from an index (a count read off a profile of
# benchmarks/filtered_search.py on the dev machine, not fitted to its results)
RANK_VS_READ = 8


@dataclass
class FilterPlan:
    """A metadata filter as one search applies it."""

    filter: dict[str, Any]
    matching: int  # documents matching: the exact count when `exact`, else at least this many
    exact: bool
    allowed: np.ndarray | None = None  # vector ids of every match, once read (few matches, or a fallback)


def first_depth(k: int, matching: int, vectors: int) -> int:
    """The first unfiltered depth: enough for k passing candidates if matches spread like the filter's
    lower-bound share of the collection, capped so a large collection does not start too deep."""
    share = max(matching, 1) / max(vectors, 1)
    wanted = math.ceil(OVERFETCH * k / share)
    return int(min(vectors, max(k, min(wanted, max(POST_FILTER_FIRST_DEPTH, 2 * k)))))


def next_depth(k: int, depth: int, fewest_passed: int, vectors: int, mean_passed: float | None = None) -> int | None:
    """The next depth after a search of `depth` in which the worst row had `fewest_passed` candidates
    pass (`mean_passed` on average, given when the matches can be read from indexes); None when
    post-filtering should give up: the index is exhausted, it would go too deep, or ranking that many
    candidates would cost more than reading every match, as many as the average pass rate predicts
    (a filter just past `EXACT_FILTER_MAX` matches)."""
    if depth >= vectors:
        return None
    rate = max(fewest_passed, 0.5) / depth  # no candidate passing: assume half of one did
    wanted = max(2 * depth, math.ceil(OVERFETCH * k / rate))
    if wanted > POST_FILTER_MAX_DEPTH:
        return None
    if mean_passed is not None and wanted * RANK_VS_READ > mean_passed / depth * vectors:
        return None
    return int(min(vectors, wanted))


def filtered_ef(k: int, allowed: int, vectors: int, ef: int) -> int:
    """The HNSW beam for a search under a filter's bitmap: the beam ranks vectors whether they pass
    or not, so a filter that passes a share `s` leaves about `ef * s` of it for the results. It is
    widened to twice `k / s` (as deep as post-filtering would look), up to `FILTERED_EF_MAX`
    (benchmarks/filtered_search.py: recall of the read-all plan)."""
    share = max(allowed, 1) / max(vectors, 1)
    return max(ef, min(FILTERED_EF_MAX, math.ceil(OVERFETCH * k / share)))
