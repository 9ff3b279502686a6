"""Relevance feedback: the HTTP endpoints over a real server, and the durable log behind them."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from indexing.catalog import CollectionCatalog
from indexing.collection import Collection, CollectionConfig
from indexing.feedback import FeedbackLog, default_query_id
from indexing.store import Document

DOCS = [
    {"id": "bees", "text": "Bees pollinate flowers while they collect nectar."},
    {"id": "honey", "text": "Honey bees turn nectar into honey inside wax combs."},
    {"id": "git", "text": "Git stores history as a graph of commits."},
]


@pytest.fixture
def collection(client) -> str:
    name = f"fb-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    yield name
    client.delete(f"/v1/collections/{name}")


def test_feedback_is_recorded_merged_by_query_and_cleared(client, collection: str) -> None:
    url = f"/v1/collections/{collection}/feedback"
    first = client.post(url, json={"query": "How do bees make honey?",
                                   "judgments": [{"id": "honey", "relevance": 3}, {"id": "git", "relevance": 0}]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["query_id"] == default_query_id("how do bees  make honey?")
    assert (body["recorded"], body["queries"], body["judgments"], body["relevant"]) == (2, 1, 2, 1)

    # The same query again (other case and spacing): one query; a re-judged pair replaces the old grade.
    again = client.post(url, json={"query": "how do bees make honey?  ",
                                   "judgments": [{"id": "git", "relevance": 2}, {"id": "bees", "relevance": 1}]})
    assert again.json()["query_id"] == body["query_id"]
    assert (again.json()["queries"], again.json()["judgments"], again.json()["relevant"]) == (1, 3, 2)
    named = client.post(url, json={"query": "version control", "query_id": "vc-1",
                                   "judgments": [{"id": "git", "relevance": 3}]})
    assert named.json()["query_id"] == "vc-1"
    assert client.get(url).json() == {"collection": collection, "queries": 2, "judgments": 4, "relevant": 3}

    cleared = client.delete(url)
    assert cleared.status_code == 200 and cleared.json()["deleted"] == 4
    assert client.get(url).json()["judgments"] == 0


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"query": "bees", "judgments": [{"id": "bees", "relevance": 2}, {"id": "nope", "relevance": 1}]}, 400,
         "judgments[1].id"),
        ({"query": "bees", "judgments": [{"id": "bees", "relevance": 2}, {"id": "bees", "relevance": 1}]}, 400,
         "judged twice"),
        ({"query": "bees", "judgments": [{"id": "bees", "relevance": 4}]}, 422, "relevance"),
        ({"query": "bees", "judgments": []}, 422, "judgments"),
        ({"query": "   ", "judgments": [{"id": "bees", "relevance": 1}]}, 400, "query"),
        ({"judgments": [{"id": "bees", "relevance": 1}]}, 422, "query"),
    ],
)
def test_bad_feedback_gets_a_clear_error_and_stores_nothing(client, collection: str, body: dict, status: int,
                                                           needle: str) -> None:
    r = client.post(f"/v1/collections/{collection}/feedback", json=body)
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text
    assert client.get(f"/v1/collections/{collection}/feedback").json()["judgments"] == 0


def test_feedback_on_an_unknown_collection_is_404(client) -> None:
    r = client.post("/v1/collections/no-such-thing/feedback",
                    json={"query": "x", "judgments": [{"id": "a", "relevance": 1}]})
    assert r.status_code == 404


def test_feedback_survives_reopening_and_goes_with_the_collection(tmp_path: Path) -> None:
    root = tmp_path / "collections"
    catalog = CollectionCatalog(tmp_path)
    coll = catalog.create(CollectionConfig("c", "m", 4))
    coll.upsert([Document("a", "x"), Document("b", "y")], np.eye(4, dtype=np.float32)[:2])
    coll.feedback.record("q1", "first query", [("a", 3), ("b", 0)])
    coll.feedback.record("q2", "second query", [("b", 2)])
    catalog.close()

    reopened = Collection.open(root / "c")
    assert reopened.feedback.labels() == ({"q1": "first query", "q2": "second query"},
                                          {"q1": {"a": 3, "b": 0}, "q2": {"b": 2}})
    reopened.close()
    log = FeedbackLog(root / "c" / "feedback.sqlite3")
    assert log.summary(min_grade=3).relevant == 1
    log.close()

    catalog = CollectionCatalog(tmp_path)
    catalog.open_all()
    catalog.delete("c")
    assert not (root / "c").exists()
    catalog.close()
