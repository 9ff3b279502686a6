"""The rerank stage of search: applied, skipped when calibrated relevance settles it, deadline-safe."""

from __future__ import annotations

import pytest

from indexing.calibration.model import CalibratorConfig
from indexing.calibration.relevance import fit_calibration
from indexing.collection import Hit
from service.cascade import CascadePolicy
from tests.test_calibration import synthetic_queries

PASSAGES = [
    ("bees", "Bees pollinate flowers while they collect nectar."),
    ("honey", "Honey bees store nectar as honey in wax combs."),
    ("hive", "A bee hive holds one queen and thousands of worker bees."),
    ("bread", "Bread dough rises because yeast produces carbon dioxide."),
    ("jupiter", "Jupiter is the largest planet of the solar system."),
    ("git", "Git stores history as a graph of commits."),
]
QUERY = "how do bees make honey"


def _hit(relevance: float | None) -> Hit:
    return Hit(id="x", score=0.5, text="t", metadata={}, vid=0, relevance=relevance)


@pytest.mark.parametrize(
    ("relevances", "separated"),
    [([0.95, 0.02, 0.99], True), ([0.95, 0.5, 0.01], False), ([None, 0.99], False), ([], False)],
)
def test_policy_skips_only_when_every_candidate_is_settled(relevances, separated):
    assert CascadePolicy(True, 0.1, 0.9).separated([_hit(r) for r in relevances]) is separated
    assert CascadePolicy(False, 0.1, 0.9).separated([_hit(r) for r in relevances]) is False


def _collection(client, name: str) -> None:
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    docs = [{"id": i, "text": t} for i, t in PASSAGES]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200


def test_rerank_stage_reorders_by_reranker_and_reports(live_server):
    with live_server.client() as client:
        _collection(client, "cascade-apply")
        r = client.post("/v1/collections/cascade-apply/search",
                        json={"query": QUERY, "top_k": 3, "rerank": {"method": "embedding", "candidates": 6}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rerank"]["applied"] is True and body["rerank"]["method"] == "embedding"
        assert body["rerank"]["candidates"] == 6
        scores = [h["rerank_score"] for h in body["hits"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert "rerank;dur=" in r.headers["server-timing"]


def test_batch_search_reranks_only_the_searches_that_ask(live_server):
    with live_server.client() as client:
        _collection(client, "cascade-batch")
        stage = {"method": "embedding", "candidates": 6, "top_n": 2}
        searches = [{"query": QUERY, "top_k": 3, "rerank": stage}, {"query": QUERY, "top_k": 3}]
        r = client.post("/v1/collections/cascade-batch/search/batch", json={"searches": searches})
        assert r.status_code == 200, r.text
        reranked, plain = r.json()["results"]
        single = client.post("/v1/collections/cascade-batch/search", json=searches[0]).json()
        assert reranked["rerank"]["applied"] is True and len(reranked["hits"]) == 2
        assert [h["id"] for h in reranked["hits"]] == [h["id"] for h in single["hits"]]
        assert plain["rerank"] is None and len(plain["hits"]) == 3
        assert all(h["rerank_score"] is None for h in plain["hits"])


def test_rerank_past_its_deadline_keeps_first_stage_order(live_server):
    with live_server.client() as client:
        _collection(client, "cascade-deadline")
        r = client.post("/v1/collections/cascade-deadline/search",
                        json={"query": QUERY, "top_k": 4, "rerank": {"method": "pointwise", "timeout_s": 1e-6}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rerank"]["applied"] is False and "deadline" in body["rerank"]["reason"]
        scores = [h["score"] for h in body["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert all(h["rerank_score"] is None for h in body["hits"])


def test_unknown_rerank_method_is_a_400_listing_valid_ones(live_server):
    with live_server.client() as client:
        _collection(client, "cascade-bad")
        r = client.post("/v1/collections/cascade-bad/search",
                        json={"query": QUERY, "rerank": {"method": "telepathy"}})
        assert r.status_code == 400
        assert "telepathy" in r.json()["error"]["message"] and "embedding" in r.json()["error"]["message"]


def test_calibrated_separated_list_skips_the_reranker_unless_forced(server_factory):
    # low == high: every calibrated relevance counts as settled, so the cascade must skip.
    server = server_factory({"RRS_CASCADE_LOW": "0.5", "RRS_CASCADE_HIGH": "0.5"})
    queries, _ = synthetic_queries(60, 6, seed=5)
    payload = fit_calibration(queries, "sentence-transformers/all-MiniLM-L6-v2", 384,
                              grid=[CalibratorConfig("power", "scores", 0.03, n_candidates=6)], n_folds=3).to_dict()
    with server.client() as client:
        _collection(client, "cascade-skip")
        assert client.put("/v1/collections/cascade-skip/calibration", json=payload).status_code == 200
        stage = {"method": "embedding", "candidates": 6}
        body = {"query": QUERY, "top_k": 6, "min_relevance": 0.0, "rerank": stage}
        skipped = client.post("/v1/collections/cascade-skip/search", json=body).json()
        assert skipped["rerank"]["applied"] is False and "separates" in skipped["rerank"]["reason"]
        assert all(h["relevance"] is not None and h["rerank_score"] is None for h in skipped["hits"])
        forced = client.post("/v1/collections/cascade-skip/search",
                             json={**body, "rerank": {**stage, "force": True}}).json()
        assert forced["rerank"]["applied"] is True
        assert all(h["rerank_score"] is not None for h in forced["hits"])
