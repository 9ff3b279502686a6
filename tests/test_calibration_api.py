"""Calibrated relevance over a real server: PUT/GET validation, min_relevance, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.calibration.model import CalibratorConfig
from indexing.calibration.relevance import fit_calibration
from tests.test_calibration import synthetic_queries

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PASSAGES = [
    ("bees", "Bees pollinate flowers while they collect nectar."),
    ("honey", "Honey bees store nectar as honey in wax combs."),
    ("hive", "A bee hive holds one queen and thousands of worker bees."),
    ("bread", "Bread dough rises because yeast produces carbon dioxide."),
    ("jupiter", "Jupiter is the largest planet of the solar system."),
    ("git", "Git stores history as a graph of commits."),
    ("marathon", "A marathon is 42.195 kilometres long."),
    ("tea", "Green tea is made from unoxidised leaves."),
]
QUERY = "how do bees make honey"


@pytest.fixture(scope="module")
def calibration_payload() -> dict:
    """A calibration for MiniLM fitted on synthetic labelled lists (8 candidates, as the collection)."""
    queries, _ = synthetic_queries(60, 8, seed=3)
    config = CalibratorConfig("power", "scores", 0.03, n_candidates=8, rank_term=True)  # the default kind
    return fit_calibration(queries, MODEL, 384, grid=[config], n_folds=3).to_dict()


def _search(client, name: str, **body) -> dict:
    r = client.post(f"/v1/collections/{name}/search", json={"query": QUERY, "top_k": 8, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_calibration_lifecycle_over_http(server_factory, tmp_path, calibration_payload) -> None:
    server = server_factory(data_dir=tmp_path / "data")
    with server.client() as client:
        assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
        docs = [{"id": i, "text": t} for i, t in PASSAGES]
        assert client.post("/v1/collections/kb/documents", json={"documents": docs}).status_code == 200

        # Without a calibrator: no relevance, and filtering by it is a clear 400, not a no-op.
        plain = _search(client, "kb")
        assert all(h.get("relevance") is None for h in plain["hits"]) and len(plain["hits"]) == 8
        r = client.post("/v1/collections/kb/search", json={"query": QUERY, "min_relevance": 0.5})
        assert r.status_code == 400 and "no relevance calibration" in r.json()["error"]["message"]
        assert client.get("/v1/collections/kb/calibration").status_code == 404

        # Invalid payloads: 422; another embedding model: 409 with the reason.
        for bad in (
            {**calibration_payload, "alpha": [1.0]},
            {**calibration_payload, "schema_version": 99},
            {**calibration_payload, "family": "cubic"},
            {**calibration_payload, "threshold": 2},
            {**calibration_payload, "extra": True},
            {k: v for k, v in calibration_payload.items() if k != "beta"},
            {**calibration_payload, "rank_weight": [0.5]},  # one weight per feature + intercept
        ):
            r = client.put("/v1/collections/kb/calibration", json=bad)
            assert r.status_code == 422, r.text
        other = {**calibration_payload, "embedding_model": "BAAI/bge-small-en-v1.5"}
        r = client.put("/v1/collections/kb/calibration", json=other)
        assert r.status_code == 409 and "bge-small" in r.json()["error"]["message"]
        assert not client.get("/v1/collections/kb").json()["calibrated"]

        r = client.put("/v1/collections/kb/calibration", json=calibration_payload)
        assert r.status_code == 200, r.text
        assert client.get("/v1/collections/kb").json()["calibrated"]

        everything = _search(client, "kb", min_relevance=0.0)
        hits = everything["hits"]
        assert len(hits) == 8 and everything["relevance_filtered"] == 0
        relevance = np.array([h["relevance"] for h in hits])
        assert np.all((relevance >= 0) & (relevance <= 1))
        assert np.all(np.diff(relevance) <= 1e-12)  # ordered like the raw scores: never reordered

        # Default cut: the fitted threshold; the response says what it cut.
        default = _search(client, "kb")
        threshold = calibration_payload["threshold"]
        assert default["min_relevance"] == pytest.approx(threshold)
        kept = int((relevance >= threshold).sum())
        assert len(default["hits"]) == kept and default["relevance_filtered"] == 8 - kept
        # An explicit cut between two hits keeps exactly the ones above it.
        cut = float((relevance[1] + relevance[2]) / 2) if relevance[1] > relevance[2] else float(relevance[1])
        strict = _search(client, "kb", min_relevance=cut)
        assert [h["id"] for h in strict["hits"]] == [h["id"] for h in hits if h["relevance"] >= cut]
        assert strict["candidates"] == 8
    server.stop()

    # A restart loads the calibration from the manifest: same payload, same relevance.
    restarted = server_factory(data_dir=tmp_path / "data")
    with restarted.client() as client:
        stored = client.get("/v1/collections/kb/calibration")
        assert stored.status_code == 200 and stored.json()["alpha"] == calibration_payload["alpha"]
        assert stored.json()["rank_weight"] == calibration_payload["rank_weight"]
        again = _search(client, "kb", min_relevance=0.0)
        np.testing.assert_allclose([h["relevance"] for h in again["hits"]], relevance, rtol=1e-6)

        assert client.delete("/v1/collections/kb/calibration").status_code == 204
        assert all(h.get("relevance") is None for h in _search(client, "kb")["hits"])
