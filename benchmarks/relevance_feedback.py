"""Searching with examples: does `like`/`unlike` (Rocchio relevance feedback) find more of the rest?

`python -m benchmarks.relevance_feedback` indexes each dataset with the default embedder (the eval
harness's batch job), searches every judged query, and simulates one round of feedback from the
first page (top 10), two ways:

- **click**: the user opens the highest-ranked relevant hit (`like`) and skipped the hits above it
  (`unlike`);
- **page**: the user marks every relevant hit of the page (`like`) and every other one (`unlike`).

Relevant is grade 2 or more (`--relevant-grade`), the binary reading of graded TREC judgments the
calibration benchmarks use too; an unjudged hit counts as not relevant.

Queries with no relevant hit on the first page get no feedback and are left out. Then, on the **residual
collection** (the feedback documents removed from every ranking and from the judgments, the
standard way to score feedback: a system must not get credit for re-finding what the user showed
it), nDCG@10 and R@100 of:

- `query` (the baseline): the query alone;
- `query + like`: `q + 0.75 mean(liked)` (the API's `{"query", "like"}`);
- `query + like + unlike`: `q + 0.75 mean(liked) - 0.15 mean(unliked)`;
- `like only`: `0.75 mean(liked)` (`{"like"}` without a query: "more like these").

Each through `rocchio()` and `Collection.search(..., exclude=...)`, what the search route calls.
The weights are Rocchio's textbook ones; nothing is fitted here. Paired query-bootstrap 90 %
intervals of each system minus the baseline.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.long_documents import paired_interval
from benchmarks.reporting import format_gain, run_on_dataset_and_demo, save_figure
from indexing.collection import Collection
from indexing.evaluation import evaluate, load_beir, score_run
from indexing.relevance_feedback import rocchio
from indexing.store import vector_id
from models.embedder import load_embedder

SYSTEMS = ("query", "query + like", "query + like + unlike", "like only")
SCENARIOS = ("click", "page")
RELEVANT_GRADE = 2
PAGE = 10
DEPTH = 100


def _feedback(scenario: str, first_page: list[str], judged: dict[str, int], grade: int
              ) -> tuple[list[str], list[str]] | None:
    """(liked, unliked) documents of the first page, or None when it holds nothing relevant."""
    relevant = [d for d in first_page if judged.get(d, 0) >= grade]
    if not relevant:
        return None
    if scenario == "click":
        return relevant[:1], first_page[: first_page.index(relevant[0])]
    return relevant, [d for d in first_page if judged.get(d, 0) < grade]


def _system_runs(coll: Collection, query: np.ndarray, liked: list[str], unliked: list[str]) -> dict[str, list[str]]:
    ids = [*liked, *unliked]
    found, vectors = coll.store.vectors_for([vector_id(i) for i in ids])
    by_vid = dict(zip(found.tolist(), vectors, strict=True))
    like = np.stack([by_vid[vector_id(i)] for i in liked])
    none = np.zeros((0, like.shape[1]), np.float32)
    unlike = np.stack([by_vid[vector_id(i)] for i in unliked]) if unliked else none
    vectors_of = {
        "query": query,
        "query + like": rocchio(query, like, none),
        "query + like + unlike": rocchio(query, like, unlike),
        "like only": rocchio(None, like, none),
    }
    return {name: [h.id for h in coll.search(v[None, :], DEPTH, exclude=ids)[0].hits]
            for name, v in vectors_of.items()}


def _scenario(coll: Collection, report: Any, data: Any, scenario: str, grade: int) -> dict[str, Any]:
    runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in SYSTEMS}
    residual: dict[str, dict[str, int]] = {}
    counts = []
    for qid in data.qrels:
        query = report.dense.query_vectors[qid]
        first = [h.id for h in coll.search(query[None, :], PAGE)[0].hits]
        fb = _feedback(scenario, first, data.qrels[qid], grade)
        if fb is None:
            continue
        liked, unliked = fb
        shown = {*liked, *unliked}
        left = {d: g for d, g in data.qrels[qid].items() if d not in shown}
        if not any(g >= grade for g in left.values()):
            continue  # nothing relevant left to find
        counts.append((len(liked), len(unliked)))
        residual[qid] = left
        for name, ranking in _system_runs(coll, query, liked, unliked).items():
            runs[name][qid] = {d: float(DEPTH - r) for r, d in enumerate(ranking)}
    if not residual:
        return {"queries": len(data.qrels), "with_feedback": 0}
    scored = {name: score_run(run, residual) for name, run in runs.items()}
    entry: dict[str, Any] = {"queries": len(data.qrels), "with_feedback": len(residual),
                             "mean_liked": float(np.mean([c[0] for c in counts])) if counts else 0.0,
                             "mean_unliked": float(np.mean([c[1] for c in counts])) if counts else 0.0,
                             "systems": {}, "gains": {}}
    base = scored["query"][1]
    for name, (aggregate, per_query) in scored.items():
        entry["systems"][name] = {k: aggregate[k] for k in ("nDCG@10", "R@100")}
        if name != "query":
            deltas = np.array([per_query[q]["nDCG@10"] - base[q]["nDCG@10"] for q in residual])
            entry["gains"][name] = {"ndcg": float(deltas.mean()), "interval90": paired_interval(deltas)}
    return entry


def _one_dataset(path: Path, data_dir: Path, encoder: Any, grade: int) -> dict[str, Any]:
    report = evaluate(path, data_dir, encoder, bm25=False, progress=False)
    assert report.dense is not None
    data = load_beir(path)
    coll = Collection.open(data_dir / "collections" / report.collection)
    try:
        return {scenario: _scenario(coll, report, data, scenario, grade) for scenario in SCENARIOS}
    finally:
        coll.close(snapshot=False)


def run(datasets: dict[str, Path], model: str, grade: int = RELEVANT_GRADE) -> dict[str, Any]:
    encoder = load_embedder(model, device="cpu")
    out: dict[str, Any] = {"model": model, "baseline": "the query alone on the same residual collection",
                           "relevant_grade": grade, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in datasets.items():
            print(f"{label} ...", flush=True)
            out["datasets"][label] = _one_dataset(path, Path(tmp) / label, encoder, grade)
    return out


def to_markdown(result: dict) -> str:
    lines = ["| dataset | feedback (queries; liked / unliked each) | system | nDCG@10 | R@100 "
             "| nDCG@10 vs query [90 % interval] |", "|---|---|---|---:|---:|---|"]
    for label, scenarios in result["datasets"].items():
        for scenario, entry in scenarios.items():
            if not entry["with_feedback"]:
                lines.append(f"| {label} | {scenario} (0 of {entry['queries']}: nothing relevant left) | | | | |")
                continue
            for name in SYSTEMS:
                m = entry["systems"][name]
                vs = format_gain(entry["gains"].get(name))
                lines.append(f"| {label} | {scenario} ({entry['with_feedback']} of {entry['queries']}; "
                             f"{entry['mean_liked']:.1f} / {entry['mean_unliked']:.1f}) | {name} | "
                             f"{m['nDCG@10']:.3f} | {m['R@100']:.3f} | {vs} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [(f"{d}, {sc}", e) for d, scenarios in result["datasets"].items() for sc, e in scenarios.items()
               if e["with_feedback"]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = ["tab:gray", "tab:cyan", "tab:blue", "tab:purple"]
    y = np.arange(len(entries))[::-1]
    height = 0.8 / len(SYSTEMS)
    for i, (name, color) in enumerate(zip(SYSTEMS, colors, strict=True)):
        values = [e["systems"][name]["nDCG@10"] for _, e in entries]
        bars = ax.barh(y + 0.4 - height * (i + 0.5), values, height, label=name, color=color)
        if name != "query":
            for bar, (_, e) in zip(bars, entries, strict=True):
                ax.annotate(f" {e['gains'][name]['ndcg']:+.3f}", (bar.get_width(), bar.get_y() + height / 2),
                            va="center", fontsize=7)
    ax.set_yticks(y, [f"{label} ({e['with_feedback']} queries)" for label, e in entries], fontsize=8)
    ax.set_xlim(0, 1.5)
    ax.set_xlabel("residual nDCG@10; label: change against the query alone")
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path, "One round of feedback from the first page: residual nDCG@10")


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--relevant-grade", type=int, default=RELEVANT_GRADE)

    run_on_dataset_and_demo(__doc__, "relevance_feedback", lambda datasets, args: run(
        datasets, args.model, args.relevant_grade), to_markdown, plot, options)


if __name__ == "__main__":
    main()
