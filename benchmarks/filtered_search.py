"""Filtered dense search with and without metadata indexes, on one collection, in the same run.

`python -m benchmarks.filtered_search` builds a collection of synthetic documents (clustered unit
vectors; metadata a multi-tenant corpus would carry: a tenant of 1,000, a skewed language, a year, a
published flag, tags) through `Collection.upsert`, the layer the HTTP routes call, so the figures
are the search itself without JSON transport. Then, for filters from 0.1 % to 80 % selectivity:
the latency of a top-10 search per query, first with no metadata index (the baseline: the filter
reads every document's metadata), then after indexing tenant, lang, year and published, the
composite lang+year and the array index tags[]. Also
reported: where a search's time goes (the filter's SQL alone), that both runs return the same hits,
what building the indexes took, and what they cost a write (upserts into a second collection with
and without them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting import save_figure, write_results
from indexing.collection import Collection, CollectionConfig
from indexing.store import Document

DIM = 384
INDEXED = ["tenant", "lang", "year", "published", "lang+year", "tags[]"]  # a composite, an array index
LANGS = ["en"] * 10 + ["de"] * 3 + ["fr"] * 2 + ["es", "it", "nl", "pt", "pl"]  # en 50 %, de 15 %, ...
FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("tenant = one of 1,000", {"tenant": "t0042"}),
    ("tenant $in 5 of them", {"tenant": {"$in": ["t0001", "t0100", "t0200", "t0300", "t0400"]}}),
    ("lang = de", {"lang": "de"}),
    ("year >= 2022", {"year": {"$gte": 2022}}),
    ("lang = en and year >= 2020", {"lang": "en", "year": {"$gte": 2020}}),
    ("tenant and published = true", {"tenant": "t0042", "published": True}),
    ("published = true", {"published": True}),
    ("tags $contains (array index tags[])", {"tags": {"$contains": "tag07"}}),
]


def _documents(n: int, start: int, rng: np.random.Generator, centroids: np.ndarray) -> tuple[list[Document],
                                                                                              np.ndarray]:
    which = rng.integers(0, len(centroids), n)
    x = centroids[which] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tenants = rng.integers(0, 1000, n)
    langs = rng.integers(0, len(LANGS), n)
    years = rng.integers(1990, 2025, n)
    published = rng.random(n) < 0.8
    docs = [
        Document(f"doc-{start + i:07d}", f"document {start + i}", {
            "tenant": f"t{tenants[i]:04d}", "lang": LANGS[langs[i]], "year": int(years[i]),
            "published": bool(published[i]),
            "tags": [f"tag{t:02d}" for t in rng.choice(100, int(rng.integers(1, 4)), replace=False)],
        })
        for i in range(n)
    ]
    return docs, x


def _fill(coll: Collection, n: int, seed: int, batch: int = 5000) -> float:
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((64, DIM)).astype(np.float32)
    start = time.perf_counter()
    for b in range(0, n, batch):
        docs, x = _documents(min(batch, n - b), b, rng, centroids)
        coll.upsert(docs, x)
    return time.perf_counter() - start


def _time_searches(coll: Collection, queries: np.ndarray, flt: dict[str, Any]) -> tuple[float, float, list]:
    """Median ms of one filtered top-10 search, median ms of the filter's SQL alone, and the hits."""
    coll.search(queries[:1], 10, flt)  # warm the statement cache and the pages
    search_ms, sql_ms, hits = [], [], []
    for q in queries:
        t = time.perf_counter()
        result = coll.search(q[None, :], 10, flt)[0]
        search_ms.append((time.perf_counter() - t) * 1000)
        hits.append([(h.id, round(h.score, 5)) for h in result.hits])
        t = time.perf_counter()
        coll.store.vids_matching(flt)
        sql_ms.append((time.perf_counter() - t) * 1000)
    return float(np.median(search_ms)), float(np.median(sql_ms)), hits


def _write_cost(folder: Path, n: int) -> list[dict[str, Any]]:
    """Upsert throughput into a fresh collection without, then with, the four indexes."""
    rows = []
    for label, fields in (("no metadata index", ()), (f"{len(INDEXED)} metadata indexes", INDEXED)):
        config = CollectionConfig(f"w{len(rows)}", "synthetic", DIM, index_kind="flat")
        coll = Collection.create(folder / config.name, config, snapshot_every=10**9, metadata_indexes=fields)
        seconds = _fill(coll, n, seed=1)
        rows.append({"run": label, "documents": n, "seconds": seconds, "docs_per_s": n / seconds})
        coll.close(snapshot=False)
    return rows


def run(n_docs: int = 200_000, n_queries: int = 30, write_docs: int = 50_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = CollectionConfig("filtered", "synthetic", DIM)
        coll = Collection.create(folder / "filtered", config, snapshot_every=10**9)
        print(f"filling {n_docs} documents ...", flush=True)
        fill_s = _fill(coll, n_docs, seed=0)
        if coll.index.needs_rebuild(config.index_kind):  # as the server does at its next snapshot
            start = time.perf_counter()
            coll.rebuild()
            print(f"built {coll.index.kind} in {time.perf_counter() - start:.0f} s", flush=True)
        count = coll.store.count()
        queries = np.random.default_rng(2).standard_normal((n_queries, DIM)).astype(np.float32)
        rows = []
        for label, flt in FILTERS:
            matching = coll.store.vids_matching(flt)[1]
            search_ms, sql_ms, hits = _time_searches(coll, queries, flt)
            rows.append({"filter": label, "matching": matching, "selectivity": matching / count,
                         "scan_ms": search_ms, "scan_sql_ms": sql_ms, "_hits": hits})
            print(f"  no index   {label}: {search_ms:.1f} ms", flush=True)
        start = time.perf_counter()
        for name in INDEXED:
            coll.create_metadata_index(name)
        build_s = time.perf_counter() - start
        for row, (label, flt) in zip(rows, FILTERS, strict=True):
            search_ms, sql_ms, hits = _time_searches(coll, queries, flt)
            row.update(indexed_ms=search_ms, indexed_sql_ms=sql_ms, speedup=row["scan_ms"] / search_ms,
                       same_hits=sum(a == b for a, b in zip(row.pop("_hits"), hits, strict=True)))
            print(f"  indexed    {label}: {search_ms:.1f} ms ({row['speedup']:.1f}x)", flush=True)
        unfiltered = _time_searches(coll, queries, {})[0]
        built_kind = coll.index.kind
        coll.close(snapshot=False)
        writes = _write_cost(folder, write_docs)
    for w in writes:
        w["vs_no_index"] = w["docs_per_s"] / writes[0]["docs_per_s"]
    return {"documents": count, "queries": n_queries, "dim": DIM, "index": built_kind, "fill_s": fill_s,
            "index_build_s": build_s, "indexed_fields": INDEXED, "unfiltered_ms": unfiltered,
            "baseline": "the same filtered searches on the same collection before any metadata index",
            "rows": rows, "writes": writes}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['documents']:,} documents ({result['dim']}-d, {result['index']} index), top-10, median of "
        f"{result['queries']} queries; baseline: {result['baseline']}. Unfiltered search: "
        f"{result['unfiltered_ms']:.1f} ms. Indexing {', '.join(result['indexed_fields'])} took "
        f"{result['index_build_s']:.1f} s.",
        "",
        "| filter | matching | no index: search (SQL) ms | indexed: search (SQL) ms | speedup | same hits |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['filter']} | {r['matching']:,} ({r['selectivity']:.1%}) | {r['scan_ms']:.1f} "
            f"({r['scan_sql_ms']:.1f}) | {r['indexed_ms']:.1f} ({r['indexed_sql_ms']:.1f}) | {r['speedup']:.1f}x | "
            f"{r['same_hits']}/{result['queries']} |"
        )
    lines += ["", "| upserts (client vectors, flat index) | documents | docs/s | vs no index |", "|---|---:|---:|---:|"]
    for w in result["writes"]:
        lines.append(f"| {w['run']} | {w['documents']:,} | {w['docs_per_s']:,.0f} | {w['vs_no_index']:.2f}x |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"][::-1]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r["scan_ms"] for r in rows], 0.4, label="no metadata index", color="tab:gray")
    bars = ax.barh(y - 0.2, [r["indexed_ms"] for r in rows], 0.4, label="indexed", color="tab:blue")
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f" {r['speedup']:.1f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center",
                    fontsize=8)
    ax.set_yticks(y, [f"{r['filter']} ({r['selectivity']:.1%})" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(r["scan_ms"] for r in rows) * 12)  # room for the labels and the legend
    ax.set_xlabel("ms per top-10 search (median, log)")
    ax.legend(fontsize=8, loc="center right")
    save_figure(fig, path, f"Filtered search on {result['documents']:,} documents, with and without metadata indexes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--write-documents", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/filtered_search.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/filtered_search.png"))
    args = parser.parse_args()
    write_results(run(args.documents, args.queries, args.write_documents), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
