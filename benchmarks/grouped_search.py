"""Grouped search: what `group_by` costs over a plain top-10, by how many groups the field has.

`python -m benchmarks.grouped_search` fills one collection (HNSW, as `auto` builds it past 50k
documents) with synthetic documents through `Collection.upsert`: unit vectors from the 1,000-cluster
mixture of `benchmarks.search`, and metadata fields that group them differently:

- `site`: one of 20, uniform (a few large groups);
- `source`: one of 5,000, uniform (many small groups);
- `author`: Zipf-skewed over 20,000 (a handful of prolific authors own the top of most rankings,
  so filling groups needs deeper candidates);
- `cluster`: the document's own mixture cluster (a query's neighbours share it: the worst case,
  every neighbour in one group until the search reaches the next cluster).

For each, the median latency of single-query searches through `Collection.search` (one FAISS
thread, as the server runs it) grouped into the best 10 groups of 1 and of 3 hits, against the
plain top-10 search in the same run (the baseline); and how deep the candidates went. Twice: without
metadata indexes (groups are filled by deepening the search), then with one on each field (groups
the first search opened are completed by one search filtered to their values).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.reporting import grouped_barh, save_figure, write_results
from benchmarks.search import clustered_vectors
from indexing import grouping
from indexing.collection import Collection, CollectionConfig
from indexing.grouping import Grouping
from indexing.store import Document

DIM = 384
CLUSTERS = 1000
FIELDS = ["site", "source", "author", "cluster"]


def _metadata(n: int, rng: np.random.Generator, clusters: np.ndarray) -> list[dict[str, Any]]:
    sites = rng.integers(0, 20, n)
    sources = rng.integers(0, 5000, n)
    authors = np.minimum(rng.zipf(1.3, n), 20_000)
    return [{"site": f"site{sites[i]:02d}", "source": f"src{sources[i]:04d}", "author": f"a{authors[i]:05d}",
             "cluster": int(clusters[i])} for i in range(n)]


def _fill(coll: Collection, n: int, batch: int = 5000) -> None:
    rng = np.random.default_rng(0)
    centers = np.random.default_rng(12345).normal(size=(CLUSTERS, DIM)).astype(np.float32)
    for b in range(0, n, batch):
        m = min(batch, n - b)
        which = rng.integers(0, CLUSTERS, m)
        x = centers[which] + rng.standard_normal((m, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        meta = _metadata(m, rng, which)
        coll.upsert([Document(f"doc-{b + i:07d}", "", meta[i]) for i in range(m)], x)


def _time(coll: Collection, queries: np.ndarray, group: Grouping | None) -> tuple[float, float]:
    """Median ms of one top-10 search (grouped or not), and the mean hits returned."""
    coll.search(queries[:1], 10, group=group)
    ms, hits = [], []
    for q in queries:
        t = time.perf_counter()
        result = coll.search(q[None, :], 10, group=group)[0]
        ms.append((time.perf_counter() - t) * 1000)
        hits.append(len(result.hits))
    return float(np.median(ms)), float(np.mean(hits))


def _depths(coll: Collection, queries: np.ndarray, group: Grouping) -> float:
    """Mean candidate depth the grouped searches reached (the deepest `nearest` call of each)."""
    seen: list[int] = []
    nearest = coll.nearest

    def spy(q: np.ndarray, k: int, *args: Any, **kwargs: Any) -> Any:
        seen.append(k)
        return nearest(q, k, *args, **kwargs)

    coll.nearest = spy  # type: ignore[method-assign]
    depths = []
    try:
        for q in queries:
            seen.clear()
            coll.search(q[None, :], 10, group=group)
            depths.append(max(seen))
    finally:
        del coll.nearest
    return float(np.mean(depths))


def run(n_docs: int = 200_000, n_queries: int = 50) -> dict[str, Any]:
    threads = faiss.omp_get_max_threads()
    queries = clustered_vectors(n_queries, DIM, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        config = CollectionConfig("grouped", "synthetic", DIM)
        coll = Collection.create(Path(tmp) / "grouped", config, snapshot_every=10**9)
        print(f"filling {n_docs} documents ...", flush=True)
        _fill(coll, n_docs)
        if coll.index.needs_rebuild(config.index_kind):  # as the server does at its next snapshot
            coll.rebuild()
        faiss.omp_set_num_threads(1)  # as the server runs FAISS (RRS_FAISS_THREADS=1)
        plain_ms, _ = _time(coll, queries, None)
        print(f"  plain top-10 ({coll.index.kind}): {plain_ms:.2f} ms", flush=True)
        rows = [{"field": f, "distinct": coll.store.facets(f, None, 1)[1], "group_size": size}
                for f in FIELDS for size in (1, 3)]
        for run_name in ("scan", "indexed"):
            if run_name == "indexed":
                for f in FIELDS:
                    coll.create_metadata_index(f)
            for row in rows:
                group = Grouping(row["field"], row["group_size"])
                ms, hits = _time(coll, queries, group)
                row[run_name] = {"ms": ms, "hits": hits, "depth": _depths(coll, queries, group),
                                 "vs_plain": ms / plain_ms}
                print(f"  {run_name:7s} {row['field']:8s} size {row['group_size']}: {ms:.2f} ms "
                      f"({ms / plain_ms:.1f}x plain), depth {row[run_name]['depth']:.0f}, {hits:.1f} hits", flush=True)
        kind = coll.index.kind
        coll.close(snapshot=False)
    faiss.omp_set_num_threads(threads)
    return {"documents": n_docs, "queries": n_queries, "dim": DIM, "index": kind, "faiss_threads": 1,
            "first_depth_size1": grouping.group_depth(10, 1), "max_depth": grouping.GROUP_MAX_DEPTH,
            "baseline": "the plain top-10 search (no group_by), same collection, same run",
            "plain_ms": plain_ms, "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['documents']:,} documents ({result['dim']}-d, {result['index']}), the best 10 groups, median ms of "
        f"{result['queries']} single queries, {result['faiss_threads']} FAISS thread; baseline: {result['baseline']} "
        f"({result['plain_ms']:.2f} ms). Depth: candidates the deepest search read (first "
        f"{result['first_depth_size1']} for groups of 1, at most {result['max_depth']:,}).",
        "",
        "| group_by | distinct values | group_size | no index: ms | vs plain | depth | hits | indexed: ms "
        "| vs plain | depth | hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        a, b = r["scan"], r["indexed"]
        lines.append(f"| {r['field']} | {r['distinct']:,} | {r['group_size']} | {a['ms']:.2f} | {a['vs_plain']:.1f}x | "
                     f"{a['depth']:.0f} | {a['hits']:.1f} | {b['ms']:.2f} | **{b['vs_plain']:.1f}x** | "
                     f"{b['depth']:.0f} | {b['hits']:.1f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    series = [([result["plain_ms"]] * len(rows), "plain top-10 (baseline)", "tab:gray"),
              ([r["scan"]["ms"] for r in rows], "grouped, no index (deepened)", "silver"),
              ([r["indexed"]["ms"] for r in rows], "grouped, field indexed (filled)", "tab:blue")]
    grouped_barh(ax, [f"{r['field']} ({r['distinct']:,} values), groups of {r['group_size']}" for r in rows], series,
                 [f"{r['indexed']['vs_plain']:.1f}x" for r in rows],
                 "ms per search for the best 10 groups (median, log); label: indexed vs plain", room=12)
    save_figure(fig, path, f"Grouped search on {result['documents']:,} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grouped_search.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/grouped_search.png"))
    args = parser.parse_args()
    write_results(run(args.documents, args.queries), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
