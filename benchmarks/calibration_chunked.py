"""Calibrated relevance on chunked long documents: the passage-fitted calibration against a refit.

`python -m benchmarks.calibration_chunked` indexes MS MARCO twice with the batch job into chunked
collections (the default: the model's window): the passages as they are (g = 1) and long documents
of g passages each (`benchmarks.long_documents`: a document's grade is its best passage's). For each
it builds the candidate lists `rrs calibrate` fits on (every judged query's top-n documents, each
scored by its best chunk) and compares:
- `adapter` shipped: the calibration rrs ships for the model (fitted on these passages; on g = 1 it
  is in-sample), applied unrefitted at its shipped `min_relevance`;
- `adapter_refit`: the calibrator refitted on that collection's own lists, 5-fold CV by query (what
  `rrs calibrate` on a chunked collection reports);
- the global cosine cutoff, carried over and refitted, the baseline the calibration stage replaces.
The same queries in both layouts, so what changes is the documents: longer, chunked, max over chunks.
Reported: precision / recall / F1 at the threshold, ECE, Brier, ROC-AUC, and calibration in the
large (the mean relevance of the kept hits against the share of them that is relevant).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.long_documents import DEFAULT_DATASET, DEFAULT_MODEL, grouped_qrels, long_documents
from benchmarks.reporting import save_figure, write_results
from indexing.batch import index_file, read_jsonl
from indexing.calibration.dataset import labelled_queries
from indexing.calibration.evaluation import MethodReport, coherence_grid, cross_validate
from indexing.calibration.features import TOPIC_SIZES
from indexing.calibration.metrics import filter_metrics, reliability_curve
from indexing.calibration.model import LabelledQuery
from indexing.calibration.relevance import RelevanceCalibration
from indexing.calibration.serving import coherence_tails
from indexing.calibration.shipped import shipped_calibration
from indexing.collection import Collection
from indexing.evaluation import load_beir
from models.embedder import load_embedder


def _layout(folder: Path, corpus: list[dict], qrels: dict[str, dict[str, int]], group: int, seed: int
            ) -> tuple[Path, dict[str, dict[str, int]]]:
    """The corpus as documents of `group` passages (1: as it is), written as a BEIR corpus file."""
    if group == 1:
        rows = [{"_id": str(r["_id"]), "text": f"{r.get('title', '')} {r['text']}".strip()} for r in corpus]
        grades = qrels
    else:
        texts, members = long_documents(corpus, group, seed)
        rows = [{"_id": f"d{i}", "text": t} for i, t in enumerate(texts)]
        grades = grouped_qrels(qrels, members)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"corpus-g{group}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, grades


def candidate_lists(coll: Collection, encoder, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                    depth: int, min_grade: int) -> list[LabelledQuery]:
    """What `rrs calibrate` fits on: documents scored by their best chunk, with the coherence tails."""
    ids = list(queries)
    vectors = np.asarray(encoder.encode([queries[q] for q in ids], input_type="query"), dtype=np.float32)
    near = coll.nearest(vectors, depth)
    docs = coll.store.get_by_vids(np.unique(near.doc_vids[near.doc_vids >= 0]).tolist())
    cand_ids = [[docs[int(v)].id for v in row if v >= 0 and int(v) in docs] for row in near.doc_vids]
    cand_scores = [s[(v >= 0) & np.isin(v, list(docs))] for s, v in zip(near.scores, near.doc_vids, strict=True)]
    lists = labelled_queries(ids, vectors, cand_ids, cand_scores, qrels, min_grade, keep_empty=True)
    row_of = {q: i for i, q in enumerate(ids)}
    sizes = tuple(m for m in TOPIC_SIZES if m <= depth)
    for q in lists:
        ranked = near.vids[row_of[q.query_id]]
        q.coherence_tails = coherence_tails(coll, ranked[ranked >= 0], sizes)
    return lists


def _carried(name: str, preds: list[np.ndarray], queries: list[LabelledQuery], threshold: float,
             probability: bool) -> MethodReport:
    metrics = filter_metrics(preds, [q.labels for q in queries], threshold, probability)
    return MethodReport(name, probability, preds, [threshold] * len(queries), metrics)


def _in_the_large(report: MethodReport, queries: list[LabelledQuery]) -> dict[str, float]:
    p = np.concatenate(report.predictions)
    y = np.concatenate([q.labels for q in queries]).astype(float)
    kept = np.concatenate([pred >= t for pred, t in zip(report.predictions, report.thresholds, strict=True)])
    return {"kept": int(kept.sum()), "mean_relevance_kept": float(p[kept].mean()) if kept.any() else float("nan"),
            "share_relevant_kept": float(y[kept].mean()) if kept.any() else float("nan"),
            "sum_relevance": float(p.sum()), "relevant_pairs": int(y.sum())}


def run(dataset: Path, model: str, groups: list[int], seed: int, folds: int) -> dict:
    payload = shipped_calibration(model, 384)
    if payload is None:
        raise SystemExit(f"no shipped calibration for {model}")
    calibration = RelevanceCalibration.from_dict(payload)
    cutoff = float(payload["fitted_on"]["cv"]["cosine_cutoff"]["threshold"])
    min_grade = int(payload["fitted_on"].get("min_grade", 2))
    depth = calibration.n_candidates
    data = load_beir(dataset)
    corpus = read_jsonl(dataset / "corpus.jsonl")
    encoder = load_embedder(model, device="cpu")
    out: dict = {"dataset": str(dataset), "model": model, "queries": len(data.queries), "depth": depth,
                 "min_grade": min_grade, "shipped_threshold": calibration.threshold, "cutoff": cutoff,
                 "fitted_on": payload["fitted_on"].get("dataset"), "layouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            started = time.perf_counter()
            path, grades = _layout(Path(tmp), corpus, data.qrels, group, seed)
            job = index_file(Path(tmp) / "data", f"g{group}", path, encoder, index_kind="flat", progress=True)
            coll = Collection.open(Path(tmp) / "data" / "collections" / f"g{group}")
            try:
                queries = candidate_lists(coll, encoder, data.queries, grades, depth, min_grade)
            finally:
                coll.close(snapshot=False)
            m = calibration.topic_size
            preds = [calibration.apply(q.scores, q.embedding, q.scores, q.coherence_tails.get(m) if m else None)
                     for q in queries]
            answerable = [q for q in queries if q.labels.any()]
            keep = [i for i, q in enumerate(queries) if q.labels.any()]
            reports = [
                _carried("adapter", [preds[i] for i in keep], answerable, calibration.threshold, True),
                _carried("cosine_cutoff", [q.scores for q in answerable], answerable, cutoff, False),
                *[cross_validate(answerable, name, folds, seed, None, coherence_grid())
                  for name in ("adapter", "cosine_cutoff")],
            ]
            reports[2].name, reports[3].name = "adapter_refit", "cosine_cutoff_refit"
            y = np.concatenate([q.labels for q in answerable])
            curves = {r.name: [list(map(float, c)) for c in reliability_curve(np.concatenate(r.predictions), y)]
                      for r in reports if r.is_probability}
            out["layouts"][f"g{group}"] = {
                "group": group,
                "documents": job.count,
                "vectors": job.vectors,
                "answerable_queries": len(answerable),
                "pairs": int(sum(len(q.scores) for q in answerable)),
                "methods": {r.name: {**r.metrics.as_dict(), **(_in_the_large(r, answerable) if r.is_probability
                                                                 else {})} for r in reports},
                "reliability": curves,
                "seconds": time.perf_counter() - started,
            }
            print(f"g={group}: {job.count} documents, {len(answerable)} answerable queries "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return out


NAMES = {"adapter": "calibrator, shipped (passage fit)", "adapter_refit": "calibrator refitted here (CV)",
         "cosine_cutoff": "cosine cutoff, carried over", "cosine_cutoff_refit": "cosine cutoff refitted here (CV)"}


def table(results: dict) -> str:
    lines = [f"{results['queries']} judged queries, top-{results['depth']} documents each, relevant at grade >= "
             f"{results['min_grade']}; shipped min_relevance {results['shipped_threshold']:.3f}, carried-over "
             f"cosine cutoff {results['cutoff']:.3f}.", "",
             "| layout | method | threshold | precision | recall | F1 | ECE | Brier | ROC-AUC | kept: mean relevance "
             "/ share relevant |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, entry in results["layouts"].items():
        layout = f"{label} ({entry['documents']} docs, {entry['vectors']} vectors)"
        for name, m in entry["methods"].items():
            ece = "" if m["ece"] is None else f"{m['ece']:.3f}"
            brier = "" if m["brier"] is None else f"{m['brier']:.3f}"
            large = (f"{m['mean_relevance_kept']:.3f} / {m['share_relevant_kept']:.3f}"
                     if "mean_relevance_kept" in m else "")
            lines.append(f"| {layout} | {NAMES[name]} | {m['threshold']:.3f} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['f1']:.3f} | {ece} | {brier} | {m['roc_auc']:.3f} | {large} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
    for (label, entry), color in zip(results["layouts"].items(), ("tab:blue", "tab:orange", "tab:green"),
                                     strict=False):
        for name, style in (("adapter", "-"), ("adapter_refit", ":")):
            mean_p, share, _count = entry["reliability"][name]
            ax.plot(mean_p, share, marker="o", ls=style, color=color, label=f"{label}: {NAMES[name]}")
    ax.set(xlabel="mean predicted relevance (bin)", ylabel="share relevant", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path, "Reliability: passages (g1) and chunked 5-passage documents (g5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--groups", default="1,5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration_chunked.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/calibration_chunked.png"))
    args = parser.parse_args()
    results = run(args.dataset, args.model, [int(g) for g in args.groups.split(",")], args.seed, args.folds)
    write_results(results, args.out, args.plot, table, plot)


if __name__ == "__main__":
    main()
