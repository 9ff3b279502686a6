"""Dense, lexical and hybrid search of one collection, against the eval harness's BM25, on two domains.

`python -m benchmarks.hybrid` runs `indexing.evaluation.evaluate` (the batch job, then every judged
query one at a time through `Collection.search`) on the MS MARCO slice and on the demo corpus (102
encyclopedic passages, 54 hand-written queries judged against every passage: another domain, and
one where no parameter was ever looked at). Systems, all from the same run:
- `dense`: the embedding search, the baseline of the hybrid gain and of every latency ratio;
- `lexical`: the collection's own FTS5 BM25 (`mode: lexical`);
- `hybrid`: reciprocal rank fusion of both top-100 lists (`mode: hybrid`, k = 60, nothing fitted);
- `bm25`: the harness's bm25s baseline (English stopwords), to check the FTS5 ranking against;
- `hybrid-w0.5`: hybrid with the lexical ranking at half weight (`lexical_weight`), for information:
  the default stays 1, nothing is chosen from these runs;
- `lexical-porter`, `hybrid-porter`: the same two modes on a second collection of the same corpus
  created with `lexical_stemmer: porter` (FTS5's English Porter stemmer), the same query vectors.
Reported: nDCG@10, R@100, MRR@10; the paired query-bootstrap 90 % interval of hybrid minus dense and
of lexical minus bm25s; search latency p50 (the query embedding is the same for dense and hybrid
and is reported apart). Then a known-item test on the same MS MARCO collection, the case hybrid
search is for: 200 passages drawn at random (fixed seed), each queried by its rarest word (letters
only, 5+ characters, in at most 3 passages: a name or a term of art), every passage holding that
word relevant. And what the lexical index costs at write time: the store's durable upsert
of the MS MARCO passages (random vectors, 1024 a transaction) with its FTS5 triggers, against the
same store with them dropped, in the same run.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.long_documents import paired_interval
from benchmarks.reporting import run_on_dataset_and_demo, save_figure
from indexing.batch import DocumentEncoder, index_file, read_jsonl
from indexing.collection import Collection
from indexing.evaluation import (
    EvalReport,
    default_collection_name,
    evaluate,
    load_beir,
    mode_retrieve,
    score_collection,
)
from indexing.lexical import query_terms
from models.embedder import load_embedder

DEMO = Path(__file__).resolve().parents[1] / "service" / "demo"
SYSTEMS = ("dense", "lexical", "hybrid", "bm25", "hybrid-w0.5", "lexical-porter", "hybrid-porter")
HALF_WEIGHT = 0.5  # informational only: the default weight stays 1 (nothing here is chosen from these runs)
PAIRS = (("hybrid", "dense"), ("hybrid-w0.5", "dense"), ("lexical", "bm25"), ("lexical-porter", "lexical"),
         ("hybrid-porter", "hybrid"), ("hybrid-porter", "dense"))


def demo_as_beir(folder: Path) -> Path:
    """The shipped demo corpus and its judged queries laid out as a BEIR folder."""
    (folder / "qrels").mkdir(parents=True)
    shutil.copy(DEMO / "demo_corpus.jsonl", folder / "corpus.jsonl")
    shutil.copy(DEMO / "queries.jsonl", folder / "queries.jsonl")
    shutil.copy(DEMO / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    return folder


def store_write_cost(corpus: Path, repeats: int = 3) -> dict[str, float]:
    """Seconds to upsert the corpus into a store with and without its lexical index (best of `repeats`)."""
    from indexing.batch import read_documents
    from indexing.store import DocumentStore

    batches = list(read_documents(corpus))
    vectors = [np.random.default_rng(i).normal(size=(len(b), 384)).astype(np.float32) for i, b in enumerate(batches)]
    best = {"with_fts5": float("inf"), "without": float("inf")}
    for _ in range(repeats):
        for variant in best:
            with tempfile.TemporaryDirectory() as tmp:
                store = DocumentStore(Path(tmp) / "s.sqlite3", 384)
                if variant == "without":
                    store._conn.executescript(
                        "DROP TRIGGER documents_fts_insert; DROP TRIGGER documents_fts_delete; "
                        "DROP TRIGGER documents_fts_update;")
                t0 = time.perf_counter()
                for docs, x in zip(batches, vectors, strict=True):
                    store.upsert(docs, x)
                best[variant] = min(best[variant], time.perf_counter() - t0)
                store.close()
    n = sum(len(b) for b in batches)
    return {"documents": n, **best, "ratio": best["with_fts5"] / best["without"]}


def known_item_queries(corpus: Path, n: int = 200, seed: int = 0) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries of one rare word each, and as relevant every passage that holds the word."""
    rows = read_jsonl(corpus)
    terms = [set(query_terms(f"{r.get('title', '')} {r['text']}")) for r in rows]
    df = Counter(t for ts in terms for t in ts)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i in random.Random(seed).sample(range(len(rows)), n):
        rare = [t for t in terms[i] if t.isalpha() and len(t) >= 5 and df[t] <= 3]
        if not rare:
            continue
        word = min(rare, key=lambda t: (df[t], t))
        queries[f"k{i}"] = word
        qrels[f"k{i}"] = {str(rows[j]["_id"]): 2 for j, ts in enumerate(terms) if word in ts}
    return queries, qrels


def _porter_collection(data_dir: Path, dataset: Path, encoder: DocumentEncoder, model: str) -> Collection:
    """The corpus indexed again into a collection whose lexical index stems (reused when it exists)."""
    name = default_collection_name(dataset, model, lexical_stemmer="porter")
    index_file(data_dir, name, dataset / "corpus.jsonl", encoder, index_kind="flat", model_name=model,
               progress=True, lexical_stemmer="porter")
    return Collection.open(data_dir / "collections" / name)


def run(datasets: dict[str, Path], model: str) -> dict:
    encoder = load_embedder(model, device="cpu")
    out: dict = {"model": model, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in datasets.items():
            report = evaluate(path, Path(tmp) / "data", encoder, k=100, modes=("lexical", "hybrid"))
            coll = Collection.open(Path(tmp) / "data" / "collections" / report.collection)
            data = load_beir(path)
            try:
                assert report.dense is not None
                report.add(mode_retrieve(coll, report.dense, data.queries, "hybrid", 100, HALF_WEIGHT,
                                         "hybrid-w0.5"), data.qrels)
            finally:
                coll.close(snapshot=False)
            stemmed = _porter_collection(Path(tmp) / "data", path, encoder, model)
            try:
                for mode in ("lexical", "hybrid"):
                    report.add(mode_retrieve(stemmed, report.dense, data.queries, mode, 100, 1.0, f"{mode}-porter"),
                               data.qrels)
            finally:
                stemmed.close(snapshot=False)
            entry: dict = {"path": str(path), "queries": report.queries, "systems": {}, "gains": {}}
            for name in SYSTEMS:
                system = report.systems[name]
                lat = system.latency_summary()
                entry["systems"][name] = {
                    "metrics": system.metrics,
                    "search_p50_ms": lat.get("search", lat.get("total", {})).get("p50"),
                }
            entry["embed_p50_ms"] = report.systems["dense"].latency_summary()["embed"]["p50"]
            for a, b in PAIRS:
                qa, qb = report.systems[a].per_query, report.systems[b].per_query
                deltas = np.array([qa[q]["nDCG@10"] - qb[q]["nDCG@10"] for q in qa])
                entry["gains"][f"{a} over {b}"] = {"ndcg": float(deltas.mean()), "interval90": paired_interval(deltas)}
            out["datasets"][label] = entry
            if "known_item" not in out:  # on the first dataset's collection
                queries, qrels = known_item_queries(path / "corpus.jsonl")
                coll = Collection.open(Path(tmp) / "data" / "collections" / report.collection)
                known = EvalReport("known-item", report.collection, model, len(queries))
                stemmed = _porter_collection(Path(tmp) / "data", path, encoder, model)
                try:
                    score_collection(known, coll, encoder, queries, qrels, 100, ("lexical", "hybrid"))
                    known.add(mode_retrieve(coll, known.dense, queries, "hybrid", 100, HALF_WEIGHT, "hybrid-w0.5"),
                              qrels)
                    for mode in ("lexical", "hybrid"):
                        known.add(mode_retrieve(stemmed, known.dense, queries, mode, 100, 1.0, f"{mode}-porter"),
                                  qrels)
                finally:
                    coll.close(snapshot=False)
                    stemmed.close(snapshot=False)
                out["known_item"] = {"dataset": label, "queries": len(queries),
                                     "systems": {n: s.metrics for n, s in known.systems.items()}}
    first = next(iter(datasets.values()))
    out["write_cost"] = store_write_cost(first / "corpus.jsonl")
    return out


def table(results: dict) -> str:
    lines = ["| dataset | system | nDCG@10 | R@100 | MRR@10 | search p50 ms (x dense) |", "|---|---|---|---|---|---|"]
    for label, entry in results["datasets"].items():
        base = entry["systems"]["dense"]["search_p50_ms"]
        for name, s in entry["systems"].items():
            m, p50 = s["metrics"], s["search_p50_ms"]
            lines.append(f"| {label} ({entry['queries']} q) | {name} | {m['nDCG@10']:.3f} | {m['R@100']:.3f} | "
                         f"{m['MRR@10']:.3f} | {p50:.2f} ({p50 / base:.2f}x) |")
    lines += ["", "| dataset | nDCG@10 gain | mean [90% CI] |", "|---|---|---|"]
    for label, entry in results["datasets"].items():
        for pair, g in entry["gains"].items():
            lo, hi = g["interval90"]
            lines.append(f"| {label} | {pair} | {g['ndcg']:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    known = results["known_item"]
    lines += ["", f"Known-item queries (one rare word each) on {known['dataset']}, {known['queries']} queries:", "",
              "| system | nDCG@10 | R@100 | MRR@10 |", "|---|---|---|---|"]
    for name, m in known["systems"].items():
        lines.append(f"| {name} | {m['nDCG@10']:.3f} | {m['R@100']:.3f} | {m['MRR@10']:.3f} |")
    w = results["write_cost"]
    lines += ["", f"Durable store upsert of {w['documents']} passages: {w['with_fts5']:.2f} s with the FTS5 index, "
              f"{w['without']:.2f} s without it ({w['ratio']:.2f}x)."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {label: entry["systems"] for label, entry in results["datasets"].items()}
    known = results["known_item"]
    groups[f"known-item ({known['dataset']})"] = {n: {"metrics": m} for n, m in known["systems"].items()}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(SYSTEMS)
    for j, name in enumerate(SYSTEMS):
        xs = np.arange(len(groups)) + (j - (len(SYSTEMS) - 1) / 2) * width
        ax.bar(xs, [g[name]["metrics"]["nDCG@10"] if name in g else 0.0 for g in groups.values()], width,
               label=name)
    ax.set_xticks(np.arange(len(groups)), list(groups))
    ax.set(ylabel="nDCG@10")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(SYSTEMS))
    save_figure(fig, path, f"Dense, lexical (FTS5 BM25) and hybrid (RRF), {results['model'].split('/')[-1]}")


def main() -> None:
    run_on_dataset_and_demo(__doc__, "hybrid", lambda datasets, args: run(datasets, args.model), table, plot)


if __name__ == "__main__":
    main()
