"""The demo collection `make serve` starts with: indexed at startup and calibrated with the shipped fit."""

from __future__ import annotations

from indexing.calibration.relevance import RelevanceCalibration
from indexing.calibration.shipped import shipped_calibration
from service.settings import Settings


def _search(client, query: str, **body) -> dict:
    r = client.post("/v1/collections/demo/search", json={"query": query, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_shipped_calibration_is_for_the_default_embedding_model() -> None:
    settings = Settings()
    payload = shipped_calibration(settings.embed_model, 384)
    assert payload is not None
    calibration = RelevanceCalibration.from_dict(payload)  # validates the whole payload
    assert calibration.topic_feature == "coherence" and 0 < calibration.threshold < 1
    assert shipped_calibration(settings.embed_model, 768) is None
    assert shipped_calibration("BAAI/bge-small-en-v1.5", 384) is None


def test_demo_search_carries_calibrated_relevance_and_cuts_at_the_shipped_threshold(server_factory) -> None:
    server = server_factory(env={"RRS_DEMO_COLLECTION": "true"})
    with server.client() as client:
        stored = client.get("/v1/collections/demo/calibration")
        shipped = shipped_calibration(Settings().embed_model, 384)
        assert stored.status_code == 200 and {k: stored.json()[k] for k in shipped} == shipped
        threshold = stored.json()["threshold"]

        # The one passage that answers is kept; the rest of the top 3 falls below min_relevance.
        found = _search(client, "how far does light travel in a year", top_k=3)
        assert [h["id"] for h in found["hits"]] == ["astronomy-02"]
        assert found["hits"][0]["relevance"] > threshold and found["min_relevance"] == threshold
        assert found["relevance_filtered"] == 2

        # Nothing in the demo answers this: an empty list is the right answer.
        none = _search(client, "who won the 2018 world cup", top_k=5)
        assert none["hits"] == [] and none["relevance_filtered"] == 5

        # min_relevance 0 keeps the whole page; relevance falls with the score within the query.
        page = _search(client, "how far does light travel in a year", top_k=5, min_relevance=0)
        relevance = [h["relevance"] for h in page["hits"]]
        assert len(relevance) == 5 and relevance == sorted(relevance, reverse=True)
        assert relevance[0] > 0.5 > relevance[1]

        # Hybrid hits keep their cosine, so the same calibration scores them and the same cut applies.
        hybrid = _search(client, "how far does light travel in a year", top_k=3, mode="hybrid")
        assert [h["id"] for h in hybrid["hits"]] == ["astronomy-02"] and hybrid["min_relevance"] == threshold
        assert hybrid["hits"][0]["relevance"] == found["hits"][0]["relevance"]
        assert hybrid["hits"][0]["fused_score"] > 0

        # A batch keeps each search's own cut: the fitted threshold, or the one a search sends.
        batch = client.post("/v1/collections/demo/search/batch", json={"searches": [
            {"query": "how far does light travel in a year", "top_k": 3},
            {"query": "how far does light travel in a year", "top_k": 5, "min_relevance": 0},
            {"query": "who won the 2018 world cup", "top_k": 5},
        ]})
        assert batch.status_code == 200, batch.text
        cut, whole, empty = batch.json()["results"]
        assert [h["id"] for h in cut["hits"]] == ["astronomy-02"] and cut["min_relevance"] == threshold
        assert abs(cut["hits"][0]["relevance"] - found["hits"][0]["relevance"]) < 1e-4
        assert [h["id"] for h in whole["hits"]] == [h["id"] for h in page["hits"]] and whole["min_relevance"] == 0
        pairs = zip(whole["hits"], page["hits"], strict=True)
        assert all(abs(a["relevance"] - b["relevance"]) < 1e-4 for a, b in pairs)
        assert empty["hits"] == [] and empty["relevance_filtered"] == 5

        # Grouped: the cut removes members, and a group left with none; what is left keeps group order.
        grouped = _search(client, "how far does light travel in a year", top_k=3, group_by="topic", group_size=3)
        assert [h["id"] for h in grouped["hits"]] == ["astronomy-02"]
        assert grouped["groups"] == [{"value": "astronomy", "ids": ["astronomy-02"]}]
        assert grouped["relevance_filtered"] == grouped["candidates"] - 1 and grouped["candidates"] > 3
        every = _search(client, "how far does light travel in a year", top_k=3, group_by="topic", group_size=3,
                        min_relevance=0)
        topics = {h["id"]: h["metadata"]["topic"] for h in every["hits"]}
        assert len(every["groups"]) == 3 and len({g["value"] for g in every["groups"]}) == 3
        assert all(len(g["ids"]) <= 3 and {topics[i] for i in g["ids"]} == {g["value"]} for g in every["groups"])

        # Diverse hits: the cut runs over the whole pool first, so MMR never brings back a cut passage.
        diverse = _search(client, "how far does light travel in a year", top_k=3, mmr={"diversity": 0.9})
        assert [h["id"] for h in diverse["hits"]] == ["astronomy-02"]
        assert diverse["relevance_filtered"] == diverse["candidates"] - 1 and diverse["candidates"] > 3
        kept = _search(client, "how far does light travel in a year", top_k=5, min_relevance=0, mmr={"diversity": 0})
        assert [h["id"] for h in kept["hits"]] == [h["id"] for h in page["hits"]]


def test_demo_without_the_shipped_calibration_then_with_it_after_a_restart(server_factory, tmp_path) -> None:
    data = tmp_path / "demo-data"
    server = server_factory(env={"RRS_DEMO_COLLECTION": "true", "RRS_DEMO_CALIBRATION": "false"}, data_dir=data)
    with server.client() as client:
        found = _search(client, "how far does light travel in a year", top_k=3)
        assert len(found["hits"]) == 3 and all(h["relevance"] is None for h in found["hits"])
        assert client.get("/v1/collections/demo/calibration").status_code == 404
    server.stop()

    # A demo created without it (RRS_DEMO_CALIBRATION off, or an older rrs) gets it at the next start...
    again = server_factory(env={"RRS_DEMO_COLLECTION": "true"}, data_dir=data)
    with again.client() as client:
        assert client.get("/v1/collections/demo/calibration").status_code == 200
        assert _search(client, "how far does light travel in a year", top_k=3)["hits"][0]["relevance"] is not None
        assert client.delete("/v1/collections/demo/calibration").status_code == 204
    again.stop()

    # ...but one removed with DELETE stays removed.
    third = server_factory(env={"RRS_DEMO_COLLECTION": "true"}, data_dir=data)
    with third.client() as client:
        assert client.get("/v1/collections/demo/calibration").status_code == 404
        assert client.get("/v1/collections/demo").json()["count"] > 0
