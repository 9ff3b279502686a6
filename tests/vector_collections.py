"""A collection of client vectors on the session server, for the API tests of search features."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np


@contextmanager
def vector_collection(
    client: httpx.Client, prefix: str, vectors: np.ndarray, *, index: str = "auto",
    metadata: Callable[[int], dict[str, Any]] = lambda i: {"i": i}, text: Callable[[int], str] | None = None,
) -> Iterator[str]:
    """A new collection holding `vectors` as documents `v0`, `v1`, ...; deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    created = client.post("/v1/collections", json={"name": name, "dimension": int(vectors.shape[1]),
                                                   "model": "custom", "index": index})
    assert created.status_code == 201, created.text
    docs = [{"id": f"v{i}", "vector": v.tolist(), "metadata": metadata(i), **({"text": text(i)} if text else {})}
            for i, v in enumerate(vectors)]
    for start in range(0, len(docs), 1000):
        added = client.post(f"/v1/collections/{name}/documents", json={"documents": docs[start:start + 1000]})
        assert added.status_code == 200, added.text
    try:
        yield name
    finally:
        client.delete(f"/v1/collections/{name}")
