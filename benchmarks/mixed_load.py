"""Query latency while a collection is being filled: the batcher's bulk lane vs one FIFO lane.

`python -m benchmarks.mixed_load` runs the server's embed batcher in process with the shipped
MiniLM and its CPU defaults. An upsert stream (requests of 256 MS MARCO passages, back to back)
runs while single queries arrive every 100 ms; it reports the queries' latency percentiles and the
upsert throughput, once with upserts in the bulk lane (what the server does) and once with them
queued beside the queries (the baseline: one lane), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from benchmarks.embed import DEFAULT_DATASET, load_passages
from service.batching import TokenBudgetBatcher
from service.metrics import Metrics
from service.settings import Settings

QUERIES = ["what is a light year", "how do vaccines work", "cost of concrete flooring", "why does bread rise"]


async def _run(batcher: TokenBudgetBatcher, docs: list, queries: list, bulk: bool, seconds: float) -> dict:
    stop = time.monotonic() + seconds
    indexed = 0

    async def upserts() -> None:
        nonlocal indexed
        i = 0
        while time.monotonic() < stop:
            chunk = [docs[(i + j) % len(docs)] for j in range(256)]
            await batcher.submit(chunk, time.monotonic() + 600, bulk=bulk)
            indexed += len(chunk)
            i += 256

    latencies: list[float] = []

    async def searches() -> None:
        k = 0
        await asyncio.sleep(0.5)  # the upsert stream is under way
        while time.monotonic() < stop:
            t0 = time.monotonic()
            await batcher.submit([queries[k % len(queries)]], time.monotonic() + 600)
            latencies.append(time.monotonic() - t0)
            k += 1
            await asyncio.sleep(0.1)

    started = time.monotonic()
    await asyncio.gather(upserts(), searches())
    ms = np.array(latencies) * 1000
    return {"queries": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "docs_per_s": indexed / (time.monotonic() - started)}


def main() -> None:
    from models.embedder import load_embedder

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of each of the two runs.")
    args = parser.parse_args()
    embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    docs = embedder.tokenize(load_passages(DEFAULT_DATASET, 2048), "document")
    queries = embedder.tokenize(QUERIES, "query")
    embedder.embed_tokenized(docs[:32])
    s = Settings()
    rows = {}
    for name, bulk in (("one FIFO lane (baseline)", False), ("bulk lane for upserts (server default)", True)):
        batcher = TokenBudgetBatcher(  # the server's CPU defaults (EmbeddingService)
            "embed", embedder.embed_tokenized, metrics=Metrics(), max_batch_tokens=s.max_batch_tokens or 2048,
            max_batch_size=s.max_batch_size, max_queue=s.max_queue_requests, linger_s=s.batch_wait_ms / 1000,
            max_padding_ratio=s.max_padding_ratio)
        batcher.start()
        rows[name] = asyncio.run(_run(batcher, docs, queries, bulk, args.seconds))
        batcher.stop()
    print("| upserts queued in | queries | query p50 ms | p95 ms | max ms | upsert docs/s |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['queries']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['max_ms']:.0f} "
              f"| {r['docs_per_s']:.1f} |")
    base, lane = rows["one FIFO lane (baseline)"], rows["bulk lane for upserts (server default)"]
    print(f"query p95: {base['p95_ms'] / lane['p95_ms']:.1f}x lower with the bulk lane; "
          f"upsert throughput {lane['docs_per_s'] / base['docs_per_s']:.2f}x the baseline's")


if __name__ == "__main__":
    main()
