"""/v1/rerank and /v2/rerank over a real server, with the official Cohere clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest

from models.rerankers import METHODS, build_reranker
from tests.server import LiveServer

QUERY = "how do cats purr"
DOCUMENTS = [
    "The stock market fell on Tuesday.",
    "Cats purr by vibrating the muscles of the larynx while breathing.",
    "A recipe for banana bread with walnuts.",
    "Domestic cats purr at 25 to 150 Hz.",
]
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_DOCUMENTS = 8
MAX_TOKENS_PER_DOC = 64


@pytest.fixture(scope="module")
def rerank_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with a local cross-encoder, a reranker LLM that cannot load, and small limits."""
    from sentence_transformers import CrossEncoder

    from models.resolve import resolve_model

    root = tmp_path_factory.mktemp("rerank-api")
    cross_encoder = root / "minilm-cross-encoder"
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path, num_labels=1,
                 device="cpu").save(str(cross_encoder))
    server = LiveServer(root / "data", env={
        "RRS_CROSS_ENCODER_MODEL": str(cross_encoder),
        "RRS_EXTRA_RERANK_MODELS": str(root / "missing-model.gguf"),
        "RRS_MAX_RERANK_DOCUMENTS": str(MAX_DOCUMENTS),
        "RRS_MAX_RERANK_TOKENS_PER_DOC": str(MAX_TOKENS_PER_DOC),
        "RRS_DEFAULT_RERANK_METHOD": "embedding",
    })
    server.start()
    yield server
    server.stop()


def _post(server: LiveServer, **body: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **body},
                      timeout=120)


def test_cohere_v1_client_ranks_with_the_default_method(rerank_server: LiveServer, embedder: object) -> None:
    client = cohere.Client(api_key="unused", base_url=rerank_server.base_url)
    resp = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True)
    assert [r.index for r in resp.results] != [] and len(resp.results) == 3
    scores = [r.relevance_score for r in resp.results]
    assert scores == sorted(scores, reverse=True)
    assert all(r.document is not None and r.document.text == DOCUMENTS[r.index] for r in resp.results)
    # Same numbers as the embedding method in-process on the same model.
    local = build_reranker("embedding", encode=embedder.encode).score(QUERY, DOCUMENTS)  # type: ignore[attr-defined]
    assert scores == pytest.approx(sorted(local, reverse=True)[:3], abs=1e-5)
    assert resp.id


def test_cohere_v2_client_with_an_llm_model_name(rerank_server: LiveServer) -> None:
    client = cohere.ClientV2(api_key="unused", base_url=rerank_server.base_url)
    first = client.rerank(model=SMOLLM, query=QUERY, documents=DOCUMENTS)
    again = client.rerank(model=SMOLLM, query=QUERY, documents=DOCUMENTS)
    assert sorted(r.index for r in first.results) == list(range(len(DOCUMENTS)))
    assert all(0.0 < r.relevance_score < 1.0 for r in first.results)  # P(yes): the model's own method
    assert [(r.index, r.relevance_score) for r in first.results] == [(r.index, r.relevance_score)
                                                                      for r in again.results]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_every_index_once(rerank_server: LiveServer, method: str) -> None:
    resp = _post(rerank_server, method=method, documents=[{"text": d} for d in DOCUMENTS])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["method"] == method
    assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCUMENTS)))
    assert all("document" not in r for r in body["results"])
    assert body["usage"]["total_tokens"] > 0


def test_unknown_method_and_model_list_the_valid_ones(rerank_server: LiveServer) -> None:
    resp = _post(rerank_server, method="bm25")
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request"
    assert all(m in resp.json()["error"]["message"] for m in METHODS)
    resp = _post(rerank_server, method="pointwise", model="rerank-english-v3.0")
    assert resp.status_code == 400 and SMOLLM in resp.json()["error"]["message"]


def test_limits_name_themselves(rerank_server: LiveServer) -> None:
    too_many = _post(rerank_server, documents=["a document"] * (MAX_DOCUMENTS + 1))
    assert too_many.status_code == 413 and "RRS_MAX_RERANK_DOCUMENTS" in too_many.json()["error"]["message"]
    long_doc = "cats purr " * MAX_TOKENS_PER_DOC
    too_long = _post(rerank_server, documents=[long_doc, "short"])
    assert too_long.status_code == 413
    assert "documents[0]" in too_long.json()["error"]["message"]
    assert "max_tokens_per_doc" in too_long.json()["error"]["message"]
    over = _post(rerank_server, max_tokens_per_doc=MAX_TOKENS_PER_DOC + 1)
    assert over.status_code == 422 and "RRS_MAX_RERANK_TOKENS_PER_DOC" in over.json()["error"]["message"]
    assert _post(rerank_server, documents=[]).status_code == 400
    assert _post(rerank_server, top_n=0).status_code == 422


def test_max_tokens_per_doc_truncates_instead_of_refusing(rerank_server: LiveServer) -> None:
    long_doc = "cats purr " * MAX_TOKENS_PER_DOC
    resp = _post(rerank_server, documents=[long_doc, "short"], max_tokens_per_doc=16)
    assert resp.status_code == 200, resp.text
    assert "1 documents truncated" in resp.json()["meta"]["warnings"][0]


def test_a_failing_reranker_does_not_take_the_server_down(rerank_server: LiveServer) -> None:
    broken = _post(rerank_server, method="pointwise", model=str(Path("missing-model.gguf")))
    assert broken.status_code == 503, broken.text
    assert "could not load" in broken.json()["error"]["message"]
    assert httpx.get(f"{rerank_server.base_url}/health", timeout=10).status_code == 200
    assert _post(rerank_server, method="cross-encoder").status_code == 200
