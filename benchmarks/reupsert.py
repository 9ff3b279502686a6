"""Re-upserting documents whose text is already stored, against the first upsert of the same documents.

`python -m benchmarks.reupsert` starts the server as a real subprocess and upserts MS MARCO passages
over HTTP (256 a request) into a default (chunked) collection, then sends the same documents again
(a sync job re-pushing a corpus: every text unchanged, new metadata), then again with a fraction of
the texts edited. The first upsert embeds everything and is the baseline of every ratio. Reported:
documents/s, the ratio to the first upsert, the `unchanged` count the server returned, and a check
that the re-upserted collection answers the same searches with the same hits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.embed import load_passages
from benchmarks.long_documents import DEFAULT_DATASET
from benchmarks.reporting import save_figure, write_results
from benchmarks.search_batch import load_queries
from service.process import ServerProcess

NAME = "reupsert"


def _upsert(client: httpx.Client, docs: list[dict], per_request: int) -> tuple[float, int]:
    unchanged = 0
    start = time.perf_counter()
    for b in range(0, len(docs), per_request):
        r = client.post(f"/v1/collections/{NAME}/documents", json={"documents": docs[b : b + per_request]})
        r.raise_for_status()
        unchanged += r.json()["unchanged"]
    return time.perf_counter() - start, unchanged


def _hits(client: httpx.Client, queries: list[str]) -> list[list[str]]:
    body = {"searches": [{"query": q, "top_k": 10} for q in queries]}
    r = client.post(f"/v1/collections/{NAME}/search/batch", json=body)
    r.raise_for_status()
    return [[h["id"] for h in res["hits"]] for res in r.json()["results"]]


def run(dataset: Path = DEFAULT_DATASET, n_docs: int = 2000, edited: float = 0.1, per_request: int = 256,
        threads: int | None = None) -> dict:
    threads = threads or os.cpu_count() or 2
    passages = load_passages(dataset, n_docs)
    queries = load_queries(dataset, 50)
    docs = [{"id": f"p{i}", "text": t, "metadata": {"round": 0}} for i, t in enumerate(passages)]
    step = max(1, round(1 / edited))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), env={"RRS_TORCH_THREADS": str(threads), "RRS_REQUEST_TIMEOUT_S": "600"})
        server.start()
        try:
            with server.client(timeout=600) as client:
                client.post("/v1/collections", json={"name": NAME}).raise_for_status()
                seconds, unchanged = _upsert(client, docs, per_request)
                rows.append({"run": "first upsert (all embedded)", "seconds": seconds, "unchanged": unchanged})
                first_hits = _hits(client, queries)
                same = [{**d, "metadata": {"round": 1}} for d in docs]
                seconds, unchanged = _upsert(client, same, per_request)
                rows.append({"run": "same texts again, new metadata", "seconds": seconds, "unchanged": unchanged})
                same_hits = _hits(client, queries)
                changed = [{**d, "text": d["text"] + " (edited)"} if i % step == 0 else d
                           for i, d in enumerate(same)]
                seconds, unchanged = _upsert(client, changed, per_request)
                rows.append({"run": f"{1 / step:.0%} of texts edited", "seconds": seconds, "unchanged": unchanged})
        finally:
            server.stop()
    for r in rows:
        r["docs_per_s"] = len(docs) / r["seconds"]
        r["vs_first"] = rows[0]["seconds"] / r["seconds"]
    return {"documents": len(docs), "per_request": per_request, "threads": threads,
            "baseline": "the first upsert of the same documents (every text embedded)",
            "same_hits_after_reupsert": sum(a == b for a, b in zip(first_hits, same_hits, strict=True)),
            "queries": len(queries), "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [
        f"{result['documents']} passages, {result['per_request']} per request; baseline: {result['baseline']}. "
        f"Same top-10 hits before and after the unchanged re-upsert: "
        f"{result['same_hits_after_reupsert']}/{result['queries']} queries.",
        "",
        "| upsert | seconds | docs/s | vs first upsert | `unchanged` |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['run']} | {r['seconds']:.1f} | {r['docs_per_s']:.0f} | {r['vs_first']:.1f}x | "
                     f"{r['unchanged']} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    rows = result["rows"]
    bars = ax.barh([r["run"] for r in rows][::-1], [r["docs_per_s"] for r in rows][::-1], color="tab:blue")
    for bar, r in zip(bars, rows[::-1], strict=True):
        ax.annotate(f" {r['vs_first']:.1f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
    ax.set_xlabel("documents / s (log)")
    ax.set_xscale("log")
    ax.set_xlim(right=max(r["docs_per_s"] for r in rows) * 4)  # room for the labels
    save_figure(fig, path, f"Upserting {result['documents']} passages over HTTP (x: vs the first upsert)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reupsert.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/reupsert.png"))
    args = parser.parse_args()
    write_results(run(args.dataset, args.documents), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
