"""Filtered dense search: metadata indexes and post-filtering, on one collection, in the same run.

`python -m benchmarks.filtered_search` builds a collection of synthetic documents (clustered unit
vectors; metadata a multi-tenant corpus would carry: a tenant of 1,000, a skewed language, a year, a
published flag, tags) through `Collection.upsert`, the layer the HTTP routes call, so the figures
are the search itself without JSON transport. Then, for filters from 0.1 % to 80 % selectivity, the
latency of a top-10 search per query under two plans:

- "read all" (the baseline, as rrs searched before post-filtering): every match's vector id is read
  from SQLite, then exact search over them (fewer than 4,096) or the HNSW search under their bitmap;
- "planned": a filter with fewer than 4,096 matches as above; a broader one is applied after an
  unfiltered HNSW search (`indexing/filter_plan.py`), counting stopping at 4,096,

first with no metadata index (the filter reads every document's metadata), then after indexing
tenant, lang, year and published, the composite lang+year and the array index tags[]. Also
reported: recall@10 of each plan against brute force over every match, that the planned searches
return the same hits with and without indexes, what building the indexes took, and what they cost
a write (upserts into a second collection with and without them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting import grouped_barh, save_figure, write_results
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
    ("lang $ne en", {"lang": {"$ne": "en"}}),
    ("tenant $nin 5 (all but 0.5 %)", {"tenant": {"$nin": ["t0001", "t0100", "t0200", "t0300", "t0400"]}}),
    ("tags $contains (array index tags[])", {"tags": {"$contains": "tag07"}}),
    ("tags $contains a tag 40 % carry", {"tags": {"$contains": "shared"}}),
    ("that tag and lang = de", {"tags": {"$contains": "shared"}, "lang": "de"}),
]
BROAD_CONTAINS = {"tags": {"$contains": "shared"}}
SHARED_TAG_RATE = 0.4


def _documents(n: int, start: int, rng: np.random.Generator, centroids: np.ndarray) -> tuple[list[Document],
                                                                                              np.ndarray]:
    which = rng.integers(0, len(centroids), n)
    x = centroids[which] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tenants = rng.integers(0, 1000, n)
    langs = rng.integers(0, len(LANGS), n)
    years = rng.integers(1990, 2025, n)
    published = rng.random(n) < 0.8
    shared = rng.random(n) < SHARED_TAG_RATE
    docs = [
        Document(f"doc-{start + i:07d}", f"document {start + i}", {
            "tenant": f"t{tenants[i]:04d}", "lang": LANGS[langs[i]], "year": int(years[i]),
            "published": bool(published[i]),
            "tags": [f"tag{t:02d}" for t in rng.choice(100, int(rng.integers(1, 4)), replace=False)]
            + (["shared"] if shared[i] else []),
        })
        for i in range(n)
    ]
    return docs, x


def _centroids(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((64, DIM)).astype(np.float32)


def _queries(n: int, seed: int = 0) -> np.ndarray:
    """Queries drawn as the documents of collection `seed` are (around its centroids), as real queries
    land where documents are. Random directions would sit far from every document, where HNSW recall
    collapses, filtered or not, and the benchmark would measure that instead."""
    centroids = _centroids(np.random.default_rng(seed))
    rng = np.random.default_rng(1000 + seed)
    q = centroids[rng.integers(0, len(centroids), n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _fill(coll: Collection, n: int, seed: int, batch: int = 5000) -> float:
    rng = np.random.default_rng(seed)
    centroids = _centroids(rng)
    start = time.perf_counter()
    for b in range(0, n, batch):
        docs, x = _documents(min(batch, n - b), b, rng, centroids)
        coll.upsert(docs, x)
    return time.perf_counter() - start


def _time_searches(coll: Collection, queries: np.ndarray, flt: dict[str, Any]) -> tuple[float, list]:
    """Median ms of one filtered top-10 search, and the hits."""
    coll.search(queries[:1], 10, flt)  # warm the statement cache and the pages
    search_ms, hits = [], []
    for q in queries:
        t = time.perf_counter()
        result = coll.search(q[None, :], 10, flt)[0]
        search_ms.append((time.perf_counter() - t) * 1000)
        hits.append([(h.id, round(h.score, 5)) for h in result.hits])
    return float(np.median(search_ms)), hits


def _both_plans(coll: Collection, queries: np.ndarray, flt: dict[str, Any]) -> dict[str, Any]:
    """Latency and hits of the read-all plan (the baseline) and the planned one."""
    out: dict[str, Any] = {}
    for plan, post_filter in (("all", False), ("planned", True)):
        coll.post_filter = post_filter
        out[f"{plan}_ms"], out[f"_{plan}_hits"] = _time_searches(coll, queries, flt)
    coll.post_filter = True
    return out


def _truth(coll: Collection, queries: np.ndarray, flt: dict[str, Any] | None) -> list[set[str]]:
    """Brute force over every match (every document without a filter): each query's true top-10 ids."""
    vids = coll.store.vids_matching(flt)[0] if flt else coll.index.live_vids()
    _, best = coll._exact_over(coll.index.prepare(queries), vids, 10)
    docs = coll.store.get_by_vids(np.unique(best[best >= 0]).tolist())
    return [{docs[int(v)].id for v in row if v >= 0} for row in best]


def _candidate_check(coll: Collection, queries: np.ndarray, flt: dict[str, Any]) -> dict[str, Any]:
    """What the post-filter's test of one search's 100 candidates against a broad indexed `$contains`
    costs: probing each candidate's elements (the form it uses) against collecting every document
    that holds the value first (the form that finds matches, which it used before)."""
    found = coll.nearest(coll.index.prepare(queries), 100)
    rows = [r[r >= 0] for r in found.doc_vids]
    out: dict[str, Any] = {"candidates": 100}
    answers = {}
    for label, per_row in (("collect_ms", False), ("per_row_ms", True)):
        times = []
        for _ in range(3):
            for cands in rows:
                t = time.perf_counter()
                answers[label] = coll.store.documents_passing(flt, cands, per_row=per_row)
                times.append((time.perf_counter() - t) * 1000)
        out[label] = float(np.median(times))
    out["same"] = bool(np.array_equal(np.sort(answers["collect_ms"]), np.sort(answers["per_row_ms"])))
    out["speedup"] = out["collect_ms"] / out["per_row_ms"]
    return out


def _recall(hits: list, truth: list[set[str]]) -> float:
    return float(np.mean([len({i for i, _ in h} & t) / max(len(t), 1) for h, t in zip(hits, truth, strict=True)]))


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
        queries = _queries(n_queries)
        rows = []
        for label, flt in FILTERS:
            matching = coll.store.count_matching(flt)
            row = {"filter": label, "matching": matching, "selectivity": matching / count}
            row.update({f"scan_{k}": v for k, v in _both_plans(coll, queries, flt).items()})
            rows.append(row)
            print(f"  no index   {label}: read all {row['scan_all_ms']:.1f} ms, "
                  f"planned {row['scan_planned_ms']:.1f} ms", flush=True)
        start = time.perf_counter()
        for name in INDEXED:
            coll.create_metadata_index(name)
        build_s = time.perf_counter() - start
        for row, (label, flt) in zip(rows, FILTERS, strict=True):
            row.update({f"indexed_{k}": v for k, v in _both_plans(coll, queries, flt).items()})
            truth = _truth(coll, queries, flt)
            counts = []
            for _ in range(5):  # what `exact_count` adds: counting every match
                t = time.perf_counter()
                coll.store.count_matching(flt)
                counts.append((time.perf_counter() - t) * 1000)
            row["indexed_count_ms"] = float(np.median(counts))
            row.update(
                recall_all=_recall(row["indexed__all_hits"], truth),
                recall_planned=_recall(row["indexed__planned_hits"], truth),
                vs_read_all=row["indexed_all_ms"] / row["indexed_planned_ms"],
                vs_no_index=row["scan_all_ms"] / row["indexed_planned_ms"],
                same_hits=sum(a == b for a, b in zip(row["scan__planned_hits"], row["indexed__planned_hits"],
                                                     strict=True)),
            )
            for key in [k for k in row if "__" in k]:
                del row[key]
            print(f"  indexed    {label}: read all {row['indexed_all_ms']:.1f} ms, planned "
                  f"{row['indexed_planned_ms']:.1f} ms ({row['vs_read_all']:.1f}x); recall@10 "
                  f"{row['recall_all']:.3f} / {row['recall_planned']:.3f}", flush=True)
        check = _candidate_check(coll, queries, BROAD_CONTAINS)
        print(f"  candidate test, broad $contains: {check['collect_ms']:.2f} ms collecting, "
              f"{check['per_row_ms']:.2f} ms per row", flush=True)
        unfiltered, unfiltered_hits = _time_searches(coll, queries, {})
        unfiltered_recall = _recall(unfiltered_hits, _truth(coll, queries, None))
        built_kind = coll.index.kind
        coll.close(snapshot=False)
        writes = _write_cost(folder, write_docs)
    for w in writes:
        w["vs_no_index"] = w["docs_per_s"] / writes[0]["docs_per_s"]
    return {"documents": count, "queries": n_queries, "dim": DIM, "index": built_kind, "fill_s": fill_s,
            "index_build_s": build_s, "indexed_fields": INDEXED, "unfiltered_ms": unfiltered,
            "unfiltered_recall": unfiltered_recall,
            "baseline": "the read-all plan on the same collection: without metadata indexes, and with them",
            "rows": rows, "writes": writes, "candidate_check": check}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['documents']:,} documents ({result['dim']}-d, {result['index']} index), top-10, median ms of "
        f"{result['queries']} queries; baseline: {result['baseline']}. Unfiltered search: "
        f"{result['unfiltered_ms']:.1f} ms, recall@10 {result['unfiltered_recall']:.3f}. "
        f"Indexing {', '.join(result['indexed_fields'])} took "
        f"{result['index_build_s']:.1f} s.",
        "",
        "| filter | matching | no index: read all | no index: planned | indexed: read all | indexed: planned "
        "| planned vs read all (indexed) | vs no index, read all | recall@10 read all / planned | same hits "
        "| `exact_count` adds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['filter']} | {r['matching']:,} ({r['selectivity']:.1%}) | {r['scan_all_ms']:.1f} | "
            f"{r['scan_planned_ms']:.1f} | {r['indexed_all_ms']:.1f} | {r['indexed_planned_ms']:.1f} | "
            f"**{r['vs_read_all']:.1f}x** | {r['vs_no_index']:.0f}x | {r['recall_all']:.3f} / "
            f"{r['recall_planned']:.3f} | {r['same_hits']}/{result['queries']} | {r['indexed_count_ms']:.1f} |"
        )
    c = result["candidate_check"]
    lines += ["", f"Post-filter test of a search's {c['candidates']} candidates against `tags $contains shared` "
              f"(indexed; median of {3 * result['queries']}): collecting every holder first (the baseline, the "
              f"form that finds matches) {c['collect_ms']:.2f} ms, probing each candidate's elements "
              f"{c['per_row_ms']:.2f} ms: **{c['speedup']:.0f}x**, same answers: {c['same']}."]
    lines += ["", "| upserts (client vectors, flat index) | documents | docs/s | vs no index |", "|---|---:|---:|---:|"]
    for w in result["writes"]:
        lines.append(f"| {w['run']} | {w['documents']:,} | {w['docs_per_s']:,.0f} | {w['vs_no_index']:.2f}x |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    runs = [("scan_all_ms", "no index, read all", "tab:gray"), ("scan_planned_ms", "no index, planned", "silver"),
            ("indexed_all_ms", "indexed, read all", "tab:cyan"), ("indexed_planned_ms", "indexed, planned", "tab:blue")]
    grouped_barh(ax, [f"{r['filter']} ({r['selectivity']:.1%})" for r in rows],
                 [([r[key] for r in rows], label, color) for key, label, color in runs],
                 [f"{r['vs_no_index']:.0f}x" for r in rows],
                 "ms per top-10 search (median, log); label: indexed + planned vs no index, read all", room=15)
    save_figure(fig, path, f"Filtered search on {result['documents']:,} documents: indexes and post-filtering")


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
