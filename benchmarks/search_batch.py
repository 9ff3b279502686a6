"""Batch search against one search per request, same server, same queries, same run.

`python -m benchmarks.search_batch` starts the server as a real subprocess (query cache off, so
every query is embedded), fills a collection with MS MARCO passages over HTTP, then sends the same
searches (the slice's queries and the demo's, cycled to `--searches`, text embedded by the server)
three ways from one asyncio client on the same machine:
- single searches, one request each, at concurrency 1 (the baseline of every ratio) and higher
  (the server's dynamic batcher then merges concurrent query embeddings);
- `POST .../search/batch` of B searches, one request at a time.
Every batch answer is checked against the single search of the same query (the same hit ids in the
same order). Reported: searches/s, the ratio to single searches at concurrency 1 and to the best
single-search concurrency, and the p50 latency of a request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.embed import load_passages
from benchmarks.long_documents import DEFAULT_DATASET
from benchmarks.reporting import save_figure, write_results
from service.process import ServerProcess

DEMO_QUERIES = Path(__file__).resolve().parents[1] / "service" / "demo" / "queries.jsonl"
COLLECTION = "bench"


def load_queries(dataset: Path, n: int) -> list[str]:
    texts = [json.loads(line)["text"] for path in (dataset / "queries.jsonl", DEMO_QUERIES)
             for line in path.read_text().splitlines() if line.strip()]
    return [texts[i % len(texts)] for i in range(n)]


async def _fill(client: httpx.AsyncClient, passages: list[str], per_request: int = 256) -> None:
    r = await client.post("/v1/collections", json={"name": COLLECTION})
    r.raise_for_status()
    for start in range(0, len(passages), per_request):
        docs = [{"id": f"p{start + i}", "text": t} for i, t in enumerate(passages[start : start + per_request])]
        (await client.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": docs})).raise_for_status()
        print(f"  indexed {min(start + per_request, len(passages))}/{len(passages)}", flush=True)


async def _singles(client: httpx.AsyncClient, queries: list[str], top_k: int, concurrency: int
                   ) -> tuple[float, list[float], list[list[str]]]:
    out: list[list[str]] = [[] for _ in queries]
    latencies: list[float] = []
    todo = iter(range(len(queries)))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            r = await client.post(f"/v1/collections/{COLLECTION}/search", json={"query": queries[i], "top_k": top_k})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            out[i] = [h["id"] for h in r.json()["hits"]]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, out


async def _batches(client: httpx.AsyncClient, queries: list[str], top_k: int, size: int
                   ) -> tuple[float, list[float], list[list[str]]]:
    out: list[list[str]] = []
    latencies: list[float] = []
    start = time.perf_counter()
    for b in range(0, len(queries), size):
        body = {"searches": [{"query": q, "top_k": top_k} for q in queries[b : b + size]]}
        t0 = time.perf_counter()
        r = await client.post(f"/v1/collections/{COLLECTION}/search/batch", json=body)
        r.raise_for_status()
        latencies.append(time.perf_counter() - t0)
        out += [[h["id"] for h in res["hits"]] for res in r.json()["results"]]
    return time.perf_counter() - start, latencies, out


async def _measure(base_url: str, passages: list[str], queries: list[str], top_k: int,
                   concurrencies: tuple[int, ...], sizes: tuple[int, ...]) -> list[dict]:
    limits = httpx.Limits(max_connections=max(concurrencies), max_keepalive_connections=max(concurrencies))
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        await _fill(client, passages)
        await _singles(client, queries[:32], top_k, 4)  # warm-up: connections, kernels, allocator
        await _batches(client, queries[:64], top_k, 32)
        rows = []
        reference: list[list[str]] | None = None
        for conc in concurrencies:
            seconds, lat, ids = await _singles(client, queries, top_k, conc)
            reference = reference or ids
            rows.append({"mode": "single", "per_request": 1, "concurrency": conc, "seconds": seconds,
                         "p50_ms": 1000 * statistics.median(lat), "same_hits": sum(a == b for a, b in
                                                                                  zip(ids, reference, strict=True))})
        assert reference is not None
        for size in sizes:
            seconds, lat, ids = await _batches(client, queries, top_k, size)
            rows.append({"mode": "batch", "per_request": size, "concurrency": 1, "seconds": seconds,
                         "p50_ms": 1000 * statistics.median(lat),
                         "same_hits": sum(a == b for a, b in zip(ids, reference, strict=True))})
    return rows


def run(dataset: Path = DEFAULT_DATASET, n_docs: int = 2000, n_searches: int = 512, top_k: int = 10,
        concurrencies: tuple[int, ...] = (1, 8, 32), sizes: tuple[int, ...] = (8, 32, 128),
        threads: int | None = None) -> dict:
    threads = threads or os.cpu_count() or 2
    passages = load_passages(dataset, n_docs)
    queries = load_queries(dataset, n_searches)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), env={"RRS_QUERY_CACHE_SIZE": "0", "RRS_TORCH_THREADS": str(threads),
                                               "RRS_REQUEST_TIMEOUT_S": "600", "RRS_MAX_QUEUE_REQUESTS": "4096"})
        server.start()
        try:
            rows = asyncio.run(_measure(server.base_url, passages, queries, top_k, concurrencies, sizes))
        finally:
            server.stop()
    base = rows[0]
    best_single = min((r for r in rows if r["mode"] == "single"), key=lambda r: r["seconds"])
    for r in rows:
        r["searches_per_s"] = n_searches / r["seconds"]
        r["vs_single_c1"] = base["seconds"] / r["seconds"]
        r["vs_best_single"] = best_single["seconds"] / r["seconds"]
    return {"documents": len(passages), "searches": n_searches, "distinct_queries": len(set(queries)),
            "top_k": top_k, "threads": threads,
            "baseline": "single searches, one request each, concurrency 1",
            "best_single": f"single searches at concurrency {best_single['concurrency']}", "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['searches']} searches ({result['distinct_queries']} distinct queries, top_k {result['top_k']}) "
        f"over {result['documents']} passages; baseline: {result['baseline']}; best single: "
        f"{result['best_single']}.",
        "",
        "| requests | searches/request | concurrency | searches/s | vs single c=1 | vs best single | "
        "request p50 ms | same hits as single |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['per_request']} | {r['concurrency']} | {r['searches_per_s']:.1f} | "
            f"{r['vs_single_c1']:.2f}x | {r['vs_best_single']:.2f}x | {r['p50_ms']:.1f} | "
            f"{r['same_hits']}/{result['searches']} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    rows = result["rows"]
    labels = [f"single\nc={r['concurrency']}" if r["mode"] == "single" else f"batch\nof {r['per_request']}"
              for r in rows]
    colors = ["tab:gray" if r["mode"] == "single" else "tab:blue" for r in rows]
    bars = ax.bar(labels, [r["searches_per_s"] for r in rows], color=colors)
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['vs_single_c1']:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("searches / s")
    save_figure(fig, path, f"Search throughput, {result['documents']} passages, text queries (x: vs single c=1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_batch.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/search_batch.png"))
    args = parser.parse_args()
    result = run(args.dataset, args.documents, args.searches)
    write_results(result, args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
