"""The OpenAI-compatible embeddings endpoint over a real server."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import threading
import time

import httpx
import numpy as np
import openai
import pytest

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "FAISS is a library for efficient similarity search.",
    "short",
    "A considerably longer passage about retrieval augmented generation, dense retrievers, "
    "rerankers and calibrated relevance filters that cut result lists where relevance ends.",
]


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_float_matches_in_process_model(live_server, embedder):
    resp = _client(live_server).embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2",
                                                  input=TEXTS, encoding_format="float")
    got = np.array([d.embedding for d in sorted(resp.data, key=lambda d: d.index)], dtype=np.float32)
    want = embedder.encode(TEXTS)
    assert got.shape == (4, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # usage counts real tokenizer tokens (with special tokens), not characters
    real = sum(len(t) for t in embedder.tokenize(TEXTS))
    assert resp.usage.prompt_tokens == real == resp.usage.total_tokens
    assert resp.usage.prompt_tokens < sum(len(t) for t in TEXTS)


def test_openai_client_base64_decodes_to_same_vectors(live_server, embedder):
    # The client decodes base64 itself when it asked for it (it asks by default).
    resp = _client(live_server).embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=TEXTS[:2])
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    np.testing.assert_allclose(got, embedder.encode(TEXTS[:2]), atol=1e-5)
    raw = httpx.post(live_server.base_url + "/v1/embeddings",
                     json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, embedder.encode(TEXTS[:1])[0], atol=1e-5)


def test_dimensions_truncates_and_renormalises(live_server, embedder):
    resp = _client(live_server).embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2",
                                                  input=TEXTS[:2], dimensions=128, encoding_format="float")
    got = np.array([d.embedding for d in resp.data])
    assert got.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    full = embedder.encode(TEXTS[:2])[:, :128]
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)


def test_concurrent_mixed_requests_get_the_vectors_they_get_alone(live_server, embedder):
    rng = np.random.default_rng(7)
    words = "retrieval rerank serve vector index query document model batch token cosine".split()
    requests = []
    for i in range(64):
        n = int(rng.integers(1, 6))
        requests.append([" ".join(rng.choice(words, size=int(rng.integers(1, 120)))) + f" #{i}-{j}"
                         for j in range(n)])
    alone = [embedder.encode(texts, batch_size=1) for texts in requests]

    def call(texts: list[str]) -> np.ndarray:
        r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

    with cf.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(call, requests))
    for got, want in zip(results, alone, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_input_type_and_single_string_input(live_server):
    r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": "hello", "input_type": "query"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["data"][0]["index"] == 0 and body["model"]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"input": []}, 400, "input"),
        ({"input": ["ok", "  "]}, 400, "input[1]"),
        ({}, 422, "input"),
        ({"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
        ({"input": "x", "model": "no-such-model"}, 404, "sentence-transformers/all-MiniLM-L6-v2"),
        ({"input": "x", "dimensions": 1000}, 400, "dimensions"),
        ({"input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"input": ["x"] * 2049}, 413, "2048"),
        ({"input": "word " * 400, "truncate": "none"}, 413, "input[0]"),
    ],
)
def test_bad_inputs_get_clear_errors(live_server, payload, status, needle):
    r = httpx.post(live_server.base_url + "/v1/embeddings", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]


def test_overlong_input_is_truncated_by_default(live_server, embedder):
    long_text = "word " * 400
    r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": long_text})
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == embedder.max_seq_length
    r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": long_text, "truncate": "start"})
    assert r.status_code == 200


def test_body_over_byte_limit_is_413(live_server):
    r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": "a" * (5 * 1024 * 1024)})
    assert r.status_code == 413
    assert "bytes" in r.json()["error"]["message"]


def test_malformed_json_is_422_not_500(live_server):
    r = httpx.post(live_server.base_url + "/v1/embeddings", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_server_timing_health_ready_metrics(live_server):
    r = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": "timing check"})
    timing = r.headers["server-timing"]
    for stage in ("tokenize", "queue", "inference", "total"):
        assert f"{stage};dur=" in timing
    assert httpx.get(live_server.base_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(live_server.base_url + "/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    text = httpx.get(live_server.base_url + "/metrics").text
    assert 'rrs_requests_total{method="POST",route="/v1/embeddings"' in text
    assert "rrs_batch_size_bucket" in text and "rrs_stage_duration_seconds_bucket" in text


def test_query_cache_hits_are_counted(live_server):
    def hits() -> float:
        for line in httpx.get(live_server.base_url + "/metrics").text.splitlines():
            if line.startswith('rrs_embedding_cache_total{result="hit"}'):
                return float(line.split()[-1])
        return 0.0

    text = f"cache me {time.time()}"
    first = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": text}).json()
    before = hits()
    second = httpx.post(live_server.base_url + "/v1/embeddings", json={"input": text}).json()
    assert hits() == before + 1
    assert first["data"][0]["embedding"] == second["data"][0]["embedding"]
    assert second["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]


def test_docs_are_served_without_a_cdn(live_server):
    page = httpx.get(live_server.base_url + "/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in page and "cdn." not in page
    assert httpx.get(live_server.base_url + "/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert "/v1/embeddings" in httpx.get(live_server.base_url + "/openapi.json").json()["paths"]


def test_full_queue_answers_503_with_retry_after(server_factory):
    server = server_factory({"RRS_MAX_QUEUE_REQUESTS": "1", "RRS_MAX_BATCH_TOKENS": "2048",
                             "RRS_QUERY_CACHE_SIZE": "0"})
    payload = {"input": [f"document number {i} " + "text " * 200 for i in range(24)]}
    codes: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def call(_: int) -> None:
        r = httpx.post(server.base_url + "/v1/embeddings", json=payload, timeout=120)
        with lock:
            codes.append(r.status_code)
            if r.status_code == 503:
                retry_after.append(r.headers.get("retry-after", ""))

    with cf.ThreadPoolExecutor(12) as pool:
        list(pool.map(call, range(12)))
    assert 503 in codes and 200 in codes
    assert set(codes) <= {200, 503}
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after)
    # the server keeps serving after shedding
    assert httpx.post(server.base_url + "/v1/embeddings", json={"input": "still alive"}).status_code == 200


def test_abandoned_requests_are_dropped_before_inference(server_factory):
    server = server_factory({"RRS_MAX_BATCH_TOKENS": "2048", "RRS_QUERY_CACHE_SIZE": "0"})
    heavy = {"input": [f"busy {i} " + "text " * 200 for i in range(48)]}

    def dropped() -> float:
        for line in httpx.get(server.base_url + "/metrics").text.splitlines():
            if line.startswith('rrs_dropped_requests_total{queue="embed",reason="disconnected"}'):
                return float(line.split()[-1])
        return 0.0

    blocker = threading.Thread(target=lambda: httpx.post(server.base_url + "/v1/embeddings", json=heavy,
                                                         timeout=120))
    blocker.start()
    time.sleep(0.3)  # the heavy request now occupies the worker
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base_url + "/v1/embeddings", json={"input": ["abandoned"] * 8}, timeout=0.3)
    blocker.join()
    deadline = time.monotonic() + 10
    while dropped() < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dropped() >= 1
