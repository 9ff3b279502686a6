"""Random-word texts for load generation: many distinct strings of realistic length.

Distinct strings keep the server's query-embedding cache from turning a load test into a cache test.
"""

from __future__ import annotations

import random

VOCAB = (
    "index search rerank query passage model vector cosine relevance calibration latency cache batch token "
    "server shard replica memory disk network storage database table column row schema migration backup "
    "restore cluster node region zone price product review rating shipping order invoice customer account "
    "password login session cookie header payload request response timeout retry error warning metric "
    "python rust java kernel thread process signal socket buffer queue stream window sliding attention "
    "history science river mountain ocean forest city village music film novel poem painting museum"
).split()


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))
