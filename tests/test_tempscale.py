"""TempScale: the attention temperature of the embedder, in the model, the batch job and the server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from indexing.batch import index_file
from indexing.errors import InvalidDocument
from models.embedder import load_embedder, load_space_embedder
from models.embedder.tempscale import apply_attention_temperature, space_id, split_space

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
FIXTURE = Path(__file__).parent / "fixtures" / "beir-tiny"
TEXTS = [
    "speed of light",
    "The speed of light in vacuum is exactly 299,792,458 metres per second; light from the Sun takes about "
    "eight minutes to reach Earth, and a light-year is the distance light travels in one Julian year. " * 3,
]


def test_temperature_equals_dividing_every_query_projection_by_it() -> None:
    """softmax(q.k / (sqrt(d) tau)) is softmax((q / tau).k / sqrt(d)): an independent way to the same model."""
    tau = 0.7
    scaled = load_embedder(MODEL, device="cpu", attention_temperature=tau)
    by_hand = load_embedder(MODEL, device="cpu")
    plain = by_hand.encode(TEXTS)
    layers = [m for m in by_hand.model.modules() if type(m).__name__ == "BertSelfAttention"]
    assert len(layers) == 6
    with torch.no_grad():
        for layer in layers:
            layer.query.weight /= tau
            layer.query.bias /= tau
    got, want = scaled.encode(TEXTS), by_hand.encode(TEXTS)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # ...and it is a different model: the long text moves more than the short one.
    moved = 1 - np.sum(got * plain, axis=1)
    assert moved[1] > moved[0] > 1e-4
    assert scaled.space == f"{MODEL}+tempscale=0.7"


def test_applying_one_restores_the_trained_model_exactly() -> None:
    embedder = load_embedder(MODEL, device="cpu")
    before = embedder.encode(TEXTS)
    assert apply_attention_temperature(embedder.model, 0.5) == 6
    assert apply_attention_temperature(embedder.model, 0.8) == 6  # from the trained scale, not compounded
    np.testing.assert_allclose(embedder.encode(TEXTS), load_embedder(MODEL, device="cpu",
                               attention_temperature=0.8).encode(TEXTS), atol=1e-6)
    apply_attention_temperature(embedder.model, 1.0)
    np.testing.assert_array_equal(embedder.encode(TEXTS), before)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_invalid_temperatures_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_attention_temperature(nn.Linear(2, 2), bad)


def test_a_model_without_a_logit_scale_is_refused_not_left_as_trained() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 2))
    assert apply_attention_temperature(model, 1.0) == 0
    with pytest.raises(ValueError, match="cannot be applied"):
        apply_attention_temperature(model, 0.9)


def test_space_names_round_trip() -> None:
    assert space_id(MODEL, 1.0) == MODEL and split_space(MODEL) == (MODEL, 1.0)
    assert split_space(space_id(MODEL, 0.85)) == (MODEL, 0.85)
    assert split_space("odd+tempscale=abc") == ("odd+tempscale=abc", 1.0)
    assert load_space_embedder(space_id(MODEL, 0.85), device="cpu").attention_temperature == 0.85


def test_the_batch_job_never_mixes_temperatures_in_one_collection(tmp_path: Path) -> None:
    corpus = FIXTURE / "corpus.jsonl"
    plain = load_embedder(MODEL, device="cpu")
    first = index_file(tmp_path, "docs", corpus, plain, model_name=MODEL, progress=False)
    assert first.indexed > 0
    hot = load_embedder(MODEL, device="cpu", attention_temperature=0.8)
    with pytest.raises(InvalidDocument, match="tempscale=0.8"):
        index_file(tmp_path, "docs", corpus, hot, model_name=hot.space, progress=False)
    # The same space under another spelling of the model's name resumes as before.
    again = index_file(tmp_path, "docs", corpus, plain, model_name="all-MiniLM-L6-v2", progress=False)
    assert again.indexed == 0 and again.skipped == first.indexed


def test_server_with_tempscale_embeds_rebuilds_the_demo_and_guards_collections(server_factory, tmp_path) -> None:
    data = tmp_path / "data"
    first = server_factory(env={"RRS_DEMO_COLLECTION": "true"}, data_dir=data)
    with first.client() as client:
        assert client.get("/v1/collections/demo").json()["model"] == MODEL
        # A collection of the plain model, kept across the restart below.
        assert client.post("/v1/collections", json={"name": "plain"}).status_code == 201
    first.stop()

    server = server_factory(env={"RRS_DEMO_COLLECTION": "true", "RRS_EMBED_ATTENTION_TEMPERATURE": "0.8"},
                            data_dir=data)
    reference = load_embedder(MODEL, device="cpu", attention_temperature=0.8)
    with server.client() as client:
        got = client.post("/v1/embeddings", json={"input": TEXTS, "model": MODEL}).json()
        vectors = np.array([row["embedding"] for row in got["data"]], dtype=np.float32)
        np.testing.assert_allclose(vectors, reference.encode(TEXTS), atol=1e-5)

        # The demo was embedded at tau = 1: rebuilt in the server's space, so a search answers at once,
        # without the shipped calibration (fitted for tau = 1).
        demo = client.get("/v1/collections/demo").json()
        assert demo["model"] == f"{MODEL}+tempscale=0.8" and demo["count"] > 0 and not demo["calibrated"]
        hits = client.post("/v1/collections/demo/search",
                           json={"query": "how far does light travel in a year", "top_k": 3}).json()["hits"]
        assert len(hits) == 3 and hits[0]["relevance"] is None

        assert client.post("/v1/collections", json={"name": "hot"}).json()["model"] == f"{MODEL}+tempscale=0.8"
        refused = client.post("/v1/collections/plain/documents", json={"documents": [{"id": "a", "text": "x"}]})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert "documents" in error["message"] and "tempscale=0.8" in error["message"]
        search = client.post("/v1/collections/plain/search", json={"query": "light", "top_k": 3})
        assert search.status_code == 400 and "query" in search.json()["error"]["message"]
