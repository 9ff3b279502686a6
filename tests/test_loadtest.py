"""The load-test runner's bookkeeping: what counts as admitted, shed or failed, the sustained-rate pick,
the report, and the synthetic search corpus (built through the real indexing layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexing.collection import Collection
from loadtest.corpus import ensure_collection, query_vectors, synthetic_vectors
from loadtest.report import sustained, write_report
from loadtest.runner import WARMUP_S, StepResult, summarize


def _record(path: Path, rows: list[tuple[float, str, int, float]]) -> Path:
    path.write_text("".join(f"{t:.4f},{name},{status},{ms:.3f}\n" for t, name, status, ms in rows))
    return path


def test_summarize_separates_admitted_shed_and_failed_per_endpoint(tmp_path: Path) -> None:
    t0 = 1000.0
    rows = [(t0 + 0.5, "search", 200, 999.0)]  # inside the warm-up window: not counted
    rows += [(t0 + WARMUP_S + i * 0.01, "search", 200, float(10 + i)) for i in range(100)]
    rows += [(t0 + WARMUP_S + 0.5, "search", 503, 1.0)] * 7
    rows += [(t0 + WARMUP_S + 0.6, "upsert", 200, 300.0)] * 3
    rows += [(t0 + WARMUP_S + 0.7, "upsert", 500, 5.0), (t0 + WARMUP_S + 0.8, "upsert", 0, 60000.0)]
    step = summarize("mixed", 4, _record(tmp_path / "r.csv", rows), t0, t0 + WARMUP_S + 10, rss_mb=800.0)
    assert (step.admitted, step.shed, step.errors) == (103, 7, 2)
    assert abs(step.rps - 10.3) < 1e-9 and abs(step.shed_rps - 0.7) < 1e-9
    assert step.max_ms == 300.0  # shed and failed latencies never enter the admitted percentiles
    assert step.endpoints["search"]["admitted"] == 100 and step.endpoints["search"]["shed"] == 7
    assert 108 < step.endpoints["search"]["p99_ms"] <= 109
    assert step.endpoints["upsert"]["errors"] == 2
    assert sorted(step.error_samples) == ["upsert: HTTP 500 x1", "upsert: connection error x1"]


def _step(users: int, rps: float, p99: float, shed: int = 0, errors: int = 0) -> StepResult:
    return StepResult("search", users, 10.0, int(rps * 10), shed, errors, rps, shed / 10, p99 / 2, p99, p99, p99,
                      800.0)


def test_sustained_is_the_best_clean_step_under_the_target() -> None:
    steps = [_step(1, 30, 50), _step(4, 70, 90), _step(8, 90, 140), _step(16, 95, 80, shed=5), _step(4, 60, 85)]
    assert sustained(steps, 100.0) is steps[1]
    assert sustained(steps, None) is steps[2]
    assert sustained([_step(1, 30, 50, errors=1)], None) is None


def test_report_writes_tables_and_a_saturation_png(tmp_path: Path) -> None:
    steps = [_step(1, 30, 50), _step(4, 70, 90), _step(8, 90, 140, shed=40), _step(4, 65, 85)]
    meta = {"date": "now", "machine": "test", "load_average_at_end": (1.0, 1.0, 1.0), "max_inflight": 8,
            "torch_threads": 1, "server_startup_s": 1.0, "server_peak_rss_mb": 900.0, "step_seconds": 10,
            "warmup_excluded_s": 2.0, "corpus": {}, "skipped": {"rerank": "no route"}}
    text = write_report(tmp_path, meta, steps, tmp_path / "img")
    assert "**70.0 req/s** at 4 users" in text and "| 8 | 90.0 |" in text and "Skipped: no route" in text
    for png in (tmp_path / "loadtest_search.png", tmp_path / "img" / "loadtest_search.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synthetic_corpus_is_built_once_through_the_indexing_layer(tmp_path: Path) -> None:
    built = ensure_collection(tmp_path, "bench", 2_500, "some-model", dim=16)
    assert built["documents"] == 2_500 and built["reused"] == 0.0
    assert ensure_collection(tmp_path, "bench", 2_500, "some-model", dim=16)["reused"] == 1.0
    coll = Collection.open(tmp_path / "collections" / "bench")
    try:
        assert coll.store.count() == len(coll.index) == 2_500
        queries = np.load(query_vectors(tmp_path / "q.npy", n=50, dim=16))
        assert queries.shape == (50, 16) and np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
        # queries come from the documents' cluster mixture: their nearest documents are close
        hits = coll.search(queries[:5], 1)
        assert all(result.hits[0].score > 0.5 for result in hits)
    finally:
        coll.close(snapshot=False)
    vectors = synthetic_vectors(1000, 16, seed=1)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
