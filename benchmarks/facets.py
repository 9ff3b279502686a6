"""Counts and facets with and without metadata indexes, on one collection, in the same run.

`python -m benchmarks.facets` fills a collection with the synthetic documents of
`benchmarks.filtered_search` (200k by default; a flat index, since no vector search is timed) and
times `DocumentStore.count_matching` and `DocumentStore.facets` (what `POST .../count` and
`POST .../facets` run) for a few fields and filters: first with no metadata index (the baseline,
same run), then with `tenant`, `lang`, `year`, `published` and `tags[]` indexed. Each figure is
the median of 5 calls; both runs must return the same answers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.filtered_search import DIM, _fill
from benchmarks.reporting import grouped_barh, save_figure, write_results
from indexing.collection import Collection, CollectionConfig

INDEXED = ["tenant", "lang", "year", "published", "lang+year", "tags", "tags[]"]  # tags: its scalar side
CALLS: list[tuple[str, str, Any]] = [  # (what, field or "" for a count, filter)
    ("count: published = true", "", {"published": True}),
    ("count: lang = en and year >= 2020", "", {"lang": "en", "year": {"$gte": 2020}}),
    ("facets of lang (10 values)", "lang", None),
    ("facets of year, published = true", "year", {"published": True}),
    ("facets of tags (100 values, arrays)", "tags", None),
    ("facets of tags, tenant = t0042", "tags", {"tenant": "t0042"}),
    ("facets of tenant (1,000 values), top 10", "tenant", None),
]


def _time(coll: Collection, field: str, flt: Any) -> tuple[float, Any]:
    def call() -> Any:
        if not field:
            return coll.store.count_matching(flt)
        values, distinct = coll.store.facets(field, flt, 10)
        return [(v.value, v.count) for v in values], distinct

    answer = call()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), answer


def run(n_docs: int = 200_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection.create(Path(tmp) / "facets", CollectionConfig("facets", "synthetic", DIM, index_kind="flat"),
                                 snapshot_every=10**9)
        print(f"filling {n_docs} documents ...", flush=True)
        _fill(coll, n_docs, seed=0)
        rows = []
        for label, field, flt in CALLS:
            ms, answer = _time(coll, field, flt)
            rows.append({"call": label, "scan_ms": ms, "_answer": answer})
            print(f"  no index  {label}: {ms:.1f} ms", flush=True)
        for spec in INDEXED:
            coll.create_metadata_index(spec)
        for row, (label, field, flt) in zip(rows, CALLS, strict=True):
            ms, answer = _time(coll, field, flt)
            row.update(indexed_ms=ms, speedup=row["scan_ms"] / ms, same=answer == row.pop("_answer"))
            print(f"  indexed   {label}: {ms:.1f} ms ({row['speedup']:.1f}x)", flush=True)
        count = coll.store.count()
        coll.close(snapshot=False)
    return {"documents": count, "indexed_fields": INDEXED, "rows": rows,
            "baseline": "the same calls on the same collection before any metadata index"}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['documents']:,} documents; median ms of 5 calls; baseline: {result['baseline']}; indexed: "
        f"{', '.join(result['indexed_fields'])}.",
        "",
        "| call | no index ms | indexed ms | speedup | same answer |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['call']} | {r['scan_ms']:.1f} | {r['indexed_ms']:.1f} | **{r['speedup']:.1f}x** | "
                     f"{'yes' if r['same'] else 'NO'} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    grouped_barh(ax, [r["call"] for r in rows],
                 [([r["scan_ms"] for r in rows], "no metadata index", "tab:gray"),
                  ([r["indexed_ms"] for r in rows], "indexed", "tab:blue")],
                 [f"{r['speedup']:.0f}x" for r in rows], "ms per call (median, log)", room=8)
    save_figure(fig, path, f"Counts and facets on {result['documents']:,} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/facets.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/facets.png"))
    args = parser.parse_args()
    write_results(run(args.documents), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
