"""Evaluation: metric definitions (trec_eval via ir-measures) and the end-to-end dense vs BM25 run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from indexing.evaluation import evaluate, load_beir, score_run

TINY = Path(__file__).parent / "fixtures" / "beir-tiny"


def test_load_beir_keeps_judged_queries_and_skips_the_header():
    data = load_beir(TINY)
    assert sorted(data.queries) == ["q1", "q2", "q3"]  # q4 has no judgments
    assert data.qrels["q2"] == {"p3": 2, "p4": 3}


def test_metrics_follow_trec_eval_definitions():
    qrels = {"q1": {"a": 3, "b": 1, "c": 2}, "q2": {"e": 2}, "q3": {"g": 2}}
    run = {"q1": {"a": 0.9, "x": 0.8, "c": 0.7}, "q2": {"f": 0.9, "e": 0.5}}  # q3 retrieved nothing
    aggregate, per_query = score_run(run, qrels)
    # linear gains; the ideal ranking uses every judged document (b too, though never retrieved)
    ndcg_q1 = (3 + 2 / math.log2(4)) / (3 + 2 / math.log2(3) + 1 / math.log2(4))
    ndcg_q2 = (2 / math.log2(3)) / 2
    assert per_query["q1"]["nDCG@10"] == pytest.approx(ndcg_q1, abs=1e-4)
    assert per_query["q2"]["nDCG@10"] == pytest.approx(ndcg_q2, abs=1e-4)
    assert per_query["q2"]["MRR@10"] == pytest.approx(0.5)
    assert per_query["q1"]["R@100"] == 1.0  # b (grade 1) is not relevant at rel>=2
    assert aggregate["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3, abs=1e-4)
    assert aggregate["MRR@10"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_evaluate_end_to_end_and_reuses_the_collection(tmp_path: Path, embedder):
    report = evaluate(TINY, tmp_path, embedder, k=10, progress=False, modes=("lexical", "hybrid"))
    dense, bm25 = report.systems["dense"], report.systems["bm25"]
    lexical, hybrid = report.systems["lexical"], report.systems["hybrid"]
    assert set(lexical.run) <= {"q1", "q2", "q3"} and 0 < lexical.metrics["nDCG@10"] <= 1
    assert hybrid.metrics["nDCG@10"] > 0.8 and all(len(hybrid.run[q]) == 10 for q in ("q1", "q2", "q3"))
    assert len(hybrid.latency_ms["search"]) == 3
    assert dense.metrics["nDCG@10"] > 0.8 and dense.metrics["MRR@10"] == 1.0
    assert 0 <= bm25.metrics["nDCG@10"] <= 1 and set(bm25.run) == {"q1", "q2", "q3"}
    assert len(dense.latency_ms["search"]) == 3 and min(dense.latency_ms["total"]) > 0
    # what rerankers and the calibration fit reuse: candidates with scores, query embeddings, texts
    assert report.dense is not None
    cands = report.dense.candidates["q3"]
    assert cands[0][0] == "p5" and len(cands) == 10 and cands[0][1] >= cands[1][1]
    np.testing.assert_allclose(np.linalg.norm(report.dense.query_vectors["q3"]), 1.0, atol=1e-5)
    assert "Great Red Spot" in report.dense.texts["p5"]
    assert set(report.to_json()["systems"]) == {"dense", "bm25", "lexical", "hybrid"}
    again = evaluate(TINY, tmp_path, embedder, k=10, bm25=False, progress=False)
    assert again.collection == report.collection
    assert again.systems["dense"].metrics == dense.metrics


def test_eval_on_recorded_feedback_scores_what_the_same_qrels_score(tmp_path: Path, embedder):
    """`rrs eval -c NAME --feedback`: a collection scored on its own judgments, every mode, as from BEIR."""
    import json

    from typer.testing import CliRunner

    from cli.main import app
    from indexing.collection import Collection

    model = "sentence-transformers/all-MiniLM-L6-v2"
    reference = evaluate(TINY, tmp_path, embedder, model_name=model, collection="tiny", k=10, bm25=False,
                         progress=False, modes=("lexical", "hybrid"))
    data = load_beir(TINY)
    coll = Collection.open(tmp_path / "collections" / "tiny")
    for qid, text in data.queries.items():
        coll.feedback.record(qid, text, list(data.qrels[qid].items()))
    coll.close()
    out = tmp_path / "feedback-eval.json"
    result = CliRunner().invoke(app, ["eval", "-c", "tiny", "--feedback", "--data-dir", str(tmp_path), "--k", "10",
                                      "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    systems = json.loads(out.read_text())["systems"]
    assert set(systems) == {"dense", "lexical", "hybrid"}
    for name in systems:
        assert systems[name]["metrics"] == pytest.approx(reference.systems[name].metrics)
    missing = CliRunner().invoke(app, ["eval", "--feedback", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "give --collection NAME" in missing.output


def test_eval_refuses_an_unknown_stemmer_before_loading_anything(tmp_path: Path):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["eval", "--dataset", str(TINY), "--data-dir", str(tmp_path),
                                      "--lexical-stemmer", "klingon"])
    assert result.exit_code == 2 and "--lexical-stemmer: one of none, porter" in result.output
    assert not (tmp_path / "collections").exists()
