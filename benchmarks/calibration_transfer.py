"""Does a calibration carry over to another domain? The shipped calibration on the demo's labels.

`python -m benchmarks.calibration_transfer` takes the calibration rrs ships for its default model
(fitted on MS MARCO / TREC DL, `indexing/calibration/shipped/`) and applies it, unrefitted, to the
demo collection: 102 short encyclopedic passages in 11 topics, with 54 hand-written queries judged
against every passage (`service/demo/queries.jsonl`, `qrels/test.tsv`; 6 have no answer there). It
compares, at the operating points carried over from MS MARCO:
- the calibrator at its shipped `min_relevance`;
- the global cosine cutoff at the threshold MS MARCO's cross-validation chose for it;
and, for reference, both refitted on the demo's own labels (query-grouped CV, as `rrs calibrate`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.calibration import DEFAULT_MODEL, dense_candidates, embed_dataset
from indexing.calibration.evaluation import MethodReport, coherence_grid, cross_validate
from indexing.calibration.metrics import filter_metrics, reliability_curve
from indexing.calibration.model import LabelledQuery
from indexing.calibration.relevance import RelevanceCalibration
from indexing.calibration.report import LABELS, gains, gains_table, markdown_table, write_report
from indexing.calibration.shipped import shipped_calibration

DEMO = Path(__file__).resolve().parents[1] / "service" / "demo"

LABELS.setdefault("adapter_refit", "calibrator refitted on the demo's labels (CV by query)")
LABELS.setdefault("cosine_cutoff_refit", "cosine cutoff refitted on the demo's labels (CV by query)")


def transferred(name: str, preds: list[np.ndarray], queries: list[LabelledQuery], threshold: float,
                probability: bool) -> MethodReport:
    labels = [q.labels for q in queries]
    metrics = filter_metrics(preds, labels, threshold, probability)
    return MethodReport(name, probability, preds, [threshold] * len(queries), metrics)


def empty_answers(report: MethodReport, queries: list[LabelledQuery]) -> tuple[float, float]:
    """Share of answerable queries left with no hit, and of unanswerable queries given at least one."""
    kept = [int((p >= t).sum()) for p, t in zip(report.predictions, report.thresholds, strict=True)]
    answerable = [k for k, q in zip(kept, queries, strict=True) if q.labels.any()]
    unanswerable = [k for k, q in zip(kept, queries, strict=True) if not q.labels.any()]
    return float(np.mean([k == 0 for k in answerable])), float(np.mean([k > 0 for k in unanswerable]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calibration", type=Path, default=None, help="A calibration file (default: the shipped).")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--prefix", default="calibration_transfer_demo")
    args = parser.parse_args()
    data = embed_dataset(DEMO, corpus_file="demo_corpus.jsonl")
    payload = json.loads(args.calibration.read_text()) if args.calibration else shipped_calibration(DEFAULT_MODEL, 384)
    if payload is None:
        raise SystemExit(f"no shipped calibration for {DEFAULT_MODEL}")
    calibration = RelevanceCalibration.from_dict(payload)
    started = time.time()
    queries, _ = dense_candidates(data, depth=calibration.n_candidates, keep_empty=True)
    m = calibration.topic_size
    preds = [calibration.apply(q.scores, q.embedding, q.scores, q.coherence_tails.get(m) if m else None)
             for q in queries]
    cutoff = float(payload["fitted_on"]["cv"]["cosine_cutoff"]["threshold"])
    reports = [
        transferred("adapter", preds, queries, calibration.threshold, True),
        transferred("cosine_cutoff", [q.scores for q in queries], queries, cutoff, False),
    ]
    keep = [i for i, q in enumerate(queries) if q.labels.any()]
    answerable = [queries[i] for i in keep]
    on_answerable = [
        transferred(r.name, [r.predictions[i] for i in keep], answerable, r.thresholds[0], r.is_probability)
        for r in reports
    ]
    refit = [cross_validate(answerable, name, 5, 0, None, coherence_grid()) for name in ("adapter", "cosine_cutoff")]
    for r in refit:
        r.name += "_refit"
    print(f"{len(queries)} demo queries ({len(answerable)} answerable), {len(data.doc_ids)} passages; "
          f"shipped calibration fitted on {payload['fitted_on'].get('dataset', '?')}\n")
    print("All queries, operating points carried over from MS MARCO:\n")
    print(markdown_table(reports))
    empties = {r.name: empty_answers(r, queries) for r in reports}
    for r in reports:
        empty, answered = empties[r.name]
        print(f"{LABELS.get(r.name, r.name)}: answerable queries left empty {100 * empty:.1f}%, "
              f"unanswerable queries given a hit {100 * answered:.1f}%")
    p, y = np.concatenate(preds), np.concatenate([q.labels for q in queries])
    kept = p >= calibration.threshold
    print(f"calibration in the large: sum of relevance {p.sum():.1f} against {int(y.sum())} relevant pairs; "
          f"kept hits: mean relevance {p[kept].mean():.3f}, share relevant {y[kept].mean():.3f}")
    print("reliability bins (mean relevance / share relevant / pairs): " + ", ".join(
        f"{a:.2f}/{b:.2f}/{c}" for a, b, c in zip(*reliability_curve(p, y), strict=True)))
    print("\nAnswerable queries only, with the in-domain refit for reference:\n")
    print(markdown_table([*on_answerable, *refit]))
    gain_rows = gains(reports, [q.labels for q in queries])
    print(gains_table(gain_rows))
    msmarco = payload["fitted_on"]["cv"]
    print("On MS MARCO itself (the shipped fit's own CV): calibrator P/R/F1 "
          f"{msmarco['adapter']['precision']:.3f}/{msmarco['adapter']['recall']:.3f}/{msmarco['adapter']['f1']:.3f}, "
          f"cutoff {msmarco['cosine_cutoff']['precision']:.3f}/{msmarco['cosine_cutoff']['recall']:.3f}/"
          f"{msmarco['cosine_cutoff']['f1']:.3f}")
    context = {
        "dataset": str(DEMO),
        "model": DEFAULT_MODEL,
        "queries": len(queries),
        "answerable": len(answerable),
        "calibration_fitted_on": payload["fitted_on"].get("dataset"),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - started, 1),
        "empty_answers": {name: dict(zip(("answerable_empty", "unanswerable_answered"), shares, strict=True))
                          for name, shares in empties.items()},
        "answerable_only": {r.name: r.metrics.as_dict() for r in [*on_answerable, *refit]},
    }
    paths = write_report(reports, [q.labels for q in queries], args.out, args.prefix, context, gain_rows)
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
