"""The embedder on ONNX Runtime: the same vectors as torch, the export cache, routing by batch size."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from models.embedder import load_embedder
from models.embedder.onnx import OnnxUnavailable, crossover_tokens
from service.settings import Settings

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "speed of light",
    "what is the boiling point of water at altitude",
    "The speed of light in vacuum is exactly 299,792,458 metres per second; light from the Sun takes about "
    "eight minutes to reach Earth, and a light-year is the distance light travels in one Julian year. " * 4,
    "a",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def on_onnx(onnx_cache: Path):
    embedder = load_embedder(MODEL, device="cpu", runtime="onnx", onnx_cache_dir=onnx_cache)
    embedder.prepare()
    return embedder


def test_every_batch_on_onnx_matches_torch(on_onnx, embedder) -> None:
    """Padded batches of short and long texts, one text alone, and every query/document prompt."""
    assert on_onnx.runtime_summary == "onnx" and on_onnx.runtime_for(64, 256) == "onnx"
    for batch_size in (1, 2, 32):
        got = on_onnx.encode(TEXTS, batch_size=batch_size)
        want = embedder.encode(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model's Normalize still ran
    np.testing.assert_allclose(on_onnx.encode(TEXTS[:2], input_type="query"),
                               embedder.encode(TEXTS[:2], input_type="query"), atol=1e-5)


def test_auto_routes_short_batches_to_onnx_and_long_ones_to_torch(onnx_cache: Path, embedder) -> None:
    auto = load_embedder(MODEL, device="cpu", runtime="auto", onnx_max_tokens=32, onnx_cache_dir=onnx_cache)
    auto.prepare()
    assert auto.runtime_summary == "onnx up to 32 padded tokens per batch, torch above"
    assert auto.runtime_for(1, 32) == "onnx" and auto.runtime_for(2, 17) == "torch"
    calls: list[str] = []
    real_onnx, real_torch = auto._forward_onnx, auto._forward_torch
    auto._forward_onnx = lambda *a: calls.append("onnx") or real_onnx(*a)
    auto._forward_torch = lambda *a: calls.append("torch") or real_torch(*a)
    got = auto.encode(TEXTS, batch_size=1)  # one text per batch: all short ones on ONNX Runtime
    assert calls.count("onnx") == 4 and calls.count("torch") == 1
    np.testing.assert_allclose(got, embedder.encode(TEXTS, batch_size=1), atol=1e-5)


def test_auto_measures_its_crossover_on_the_ladder(onnx_cache: Path, embedder) -> None:
    auto = load_embedder(MODEL, device="cpu", runtime="auto", onnx_cache_dir=onnx_cache)
    auto.prepare()
    assert auto.onnx_max_tokens in (0, 8, 16, 32, 64, 128, 256, 512)
    if auto.onnx_max_tokens:  # the machine decides; either way the vectors are torch's
        assert auto.runtime_for(1, auto.onnx_max_tokens) == "onnx"
        assert auto.runtime_summary == f"onnx up to {auto.onnx_max_tokens} padded tokens per batch, torch above"
    else:
        assert auto.onnx is None and auto.runtime_summary == "torch"
    np.testing.assert_allclose(auto.encode(TEXTS, batch_size=1), embedder.encode(TEXTS, batch_size=1), atol=1e-5)


def test_auto_with_zero_tokens_is_torch_only(onnx_cache: Path) -> None:
    auto = load_embedder(MODEL, device="cpu", runtime="auto", onnx_max_tokens=0, onnx_cache_dir=onnx_cache)
    assert auto.onnx is None and auto.runtime_summary == "torch" and auto.runtime_for(1, 1) == "torch"


def test_the_export_is_cached_and_a_damaged_file_is_exported_again(tmp_path: Path, embedder) -> None:
    first = load_embedder(MODEL, device="cpu", runtime="onnx", onnx_cache_dir=tmp_path)
    assert first.onnx is None and first.runtime_summary == "onnx: decided at the first batch"
    assert not any(tmp_path.iterdir())  # loading ran no model: the export waits for the embedding thread
    first.encode(TEXTS[:1])
    assert first.onnx.exported and first.onnx.path.is_file()
    again = load_embedder(MODEL, device="cpu", runtime="onnx", onnx_cache_dir=tmp_path)
    again.prepare()
    assert not again.onnx.exported and again.onnx.path == first.onnx.path
    first.onnx.path.write_bytes(b"not an onnx graph")
    repaired = load_embedder(MODEL, device="cpu", runtime="onnx", onnx_cache_dir=tmp_path)
    repaired.prepare()
    assert repaired.onnx.exported
    np.testing.assert_allclose(repaired.encode(TEXTS), embedder.encode(TEXTS), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [first.onnx.path.name]  # no temporary files left


def test_tempscale_is_part_of_the_export(onnx_cache: Path, on_onnx) -> None:
    """A temperature changes attention scales, not weights: it must get its own graph, and keep it."""
    hot = load_embedder(MODEL, device="cpu", runtime="onnx", attention_temperature=0.8, onnx_cache_dir=onnx_cache)
    hot.prepare()
    assert hot.onnx.path != on_onnx.onnx.path
    torch_hot = load_embedder(MODEL, device="cpu", attention_temperature=0.8)
    got = hot.encode(TEXTS)
    np.testing.assert_allclose(got, torch_hot.encode(TEXTS), atol=1e-5)
    assert np.abs(got - on_onnx.encode(TEXTS)).max() > 1e-3


def test_refusals_name_the_reason(onnx_cache: Path) -> None:
    with pytest.raises(OnnxUnavailable, match="float32 only"):
        load_embedder(MODEL, device="cpu", dtype="bfloat16", runtime="onnx", onnx_cache_dir=onnx_cache)
    fallback = load_embedder(MODEL, device="cpu", dtype="bfloat16", runtime="auto", onnx_cache_dir=onnx_cache)
    assert fallback.onnx is None and fallback.runtime_summary == "torch"
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_embedder(MODEL, device="cpu", runtime="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="onnx_max_tokens must be >= 0"):
        load_embedder(MODEL, device="cpu", runtime="auto", onnx_max_tokens=-1, onnx_cache_dir=onnx_cache)
    with pytest.raises(ValidationError, match="embed_runtime"):
        Settings(embed_runtime="tensorrt")
    with pytest.raises(ValidationError, match="embed_onnx_max_tokens"):
        Settings(embed_onnx_max_tokens=-5)


def test_crossover_is_the_last_length_onnx_clearly_wins() -> None:
    """Sleep-timed stand-ins (4x apart): ONNX wins up to 32 tokens, then loses; a tie stays on torch."""
    def torch_run(n: int) -> None:
        time.sleep(0.004)

    def onnx_run(n: int) -> None:
        time.sleep(0.001 if n <= 32 else 0.016)

    assert crossover_tokens(torch_run, onnx_run, lengths=(8, 16, 32, 64, 128), reps=2) == 32
    assert crossover_tokens(torch_run, lambda n: time.sleep(0.016), lengths=(8, 16), reps=2) == 0
    assert crossover_tokens(torch_run, torch_run, lengths=(8,), reps=2) == 0  # a tie is not a win


def test_server_on_onnx_answers_like_torch(server_factory, onnx_cache: Path, embedder) -> None:
    server = server_factory(env={"RRS_EMBED_RUNTIME": "auto", "RRS_EMBED_ONNX_MAX_TOKENS": "64",
                                 "RRS_ONNX_CACHE_DIR": str(onnx_cache), "RRS_DEMO_COLLECTION": "false"})
    with server.client() as client:
        models = client.get("/v1/models").json()["data"]
        assert models[0]["runtime"] == "onnx up to 64 padded tokens per batch, torch above"
        for texts in (TEXTS[:1], TEXTS):  # a short request alone (ONNX Runtime), then a long batch (torch)
            r = client.post("/v1/embeddings", json={"input": texts, "model": MODEL})
            assert r.status_code == 200, r.text
            got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, embedder.encode(texts), atol=1e-5)
