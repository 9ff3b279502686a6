"""Build the 100k-document search collection for the load test, on disk, before the server starts.

Embedding 100k passages with the real model takes over half an hour on 2 CPU cores, and the search
path's cost (query embedding + HNSW over 100k x 384 + the SQLite join for the hits) does not depend
on what the stored vectors mean. So the documents get synthetic unit vectors drawn from a mixture of
1,000 clusters (an ANN index over clustered data behaves like one over real embeddings; uniform
noise would not), and random-word texts. The collection is written through `indexing.Collection`,
the same store and snapshot format the batch job (`rrs index`) and the server use, then reused by
later runs while its document count still matches.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from indexing.collection import Collection, CollectionConfig
from indexing.store import Document
from loadtest.text import random_text

CHUNK = 10_000


def synthetic_vectors(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ensure_collection(data_dir: Path, name: str, n_docs: int, model: str, dim: int = 384) -> dict[str, object]:
    """Create `<data_dir>/collections/<name>` with `n_docs` documents unless it already holds them."""
    folder = Path(data_dir) / "collections" / name
    if (folder / "store.sqlite3").exists():
        coll = Collection.open(folder, snapshot_every=10 * n_docs)
        count = coll.store.count()
        coll.close(snapshot=False)
        if count >= n_docs:
            return {"documents": count, "build_s": 0.0, "reused": 1.0}
        raise SystemExit(f"{folder} holds {count} documents, fewer than {n_docs}: delete it to rebuild")
    started = time.perf_counter()
    coll = Collection.create(folder, CollectionConfig(name, model, dim, "cosine", "auto"), snapshot_every=10 * n_docs)
    rng = random.Random(7)
    try:
        for start in range(0, n_docs, CHUNK):
            stop = min(n_docs, start + CHUNK)
            docs = [Document(f"doc-{i}", random_text(rng, 30), {"shard": i % 16}) for i in range(start, stop)]
            coll.upsert(docs, synthetic_vectors(stop - start, dim, seed=start))
        if coll.index.needs_rebuild(coll.config.index_kind):
            coll.rebuild()  # flat while filling, HNSW once above the auto threshold
        count = coll.store.count()
        kind = coll.index.kind
    finally:
        coll.close(snapshot=True)
    return {"documents": count, "build_s": time.perf_counter() - started, "reused": 0.0, "index": kind}


def query_vectors(path: Path, n: int = 2000, dim: int = 384) -> Path:
    """Query vectors from the first chunk's cluster mixture (near stored documents, as real queries are)."""
    np.save(path, synthetic_vectors(n, dim, seed=0)[::-1].copy())
    return path
