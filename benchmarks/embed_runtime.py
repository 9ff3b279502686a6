"""Embedder runtimes: torch against ONNX Runtime and the auto split, in-process and through the server.

`python -m benchmarks.embed_runtime` measures, on this machine and in one run:
1. In-process, one embedder per runtime (`torch`, the baseline of every ratio; `onnx`; `auto`, which
   measures its own crossover at load): every query of the slice (and the demo's) embedded alone, as
   a search embeds it (latency p50/p95); then the passages in 32-row length-sorted batches (docs/s).
   The runtimes take turns in blocks of 50 queries (or of the batches holding 50 passages), so drift
   hits all alike while one runtime's idle threads do not sit beside another's work. The largest
   difference of any vector from torch's is reported beside.
2. Through the server: two real servers at once (`RRS_EMBED_RUNTIME=torch` and `auto`, query cache
   off, the demo collection), answering the same sequential requests in turns: a text search
   of the demo collection and a one-query `/v1/embeddings` call in turns of 50, and `/v1/embeddings`
   calls of 32 passages each in turns of 2 (latency p50/p95, texts/s, and the p50s of the time a
   request waited in the embed queue and of its inference, from its `Server-Timing` header).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.embed import load_passages
from benchmarks.long_documents import DEFAULT_DATASET
from benchmarks.reporting import save_figure, write_results
from benchmarks.search_batch import load_queries
from service.process import ServerProcess

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RUNTIMES = ("torch", "onnx", "auto")


def _percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def _stage_ms(header: str, stage: str) -> float:
    """One stage's duration from a Server-Timing header (`queue;dur=0.12, inference;dur=4.1`)."""
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == stage and dur:
            return float(dur)
    return 0.0


def in_process(queries: list[str], passages: list[str], cache_dir: Path, batch_size: int = 32,
               block: int = 50) -> dict:
    import torch

    from models.embedder import load_embedder

    embedders = {rt: load_embedder(MODEL, device="cpu", runtime=rt, onnx_cache_dir=cache_dir) for rt in RUNTIMES}
    for e in embedders.values():
        e.prepare()  # export, check, crossover: on this thread, which embeds
    summary = {rt: e.runtime_summary for rt, e in embedders.items()}
    print(f"  runtimes: {summary}", flush=True)
    tokenized = embedders["torch"].tokenize(queries, input_type="query")
    lat: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    vectors: dict[str, list[np.ndarray]] = {rt: [] for rt in RUNTIMES}
    for e in embedders.values():  # warm-up at a few shapes
        for t in tokenized[:8]:
            e.embed_tokenized([t])
    for start in range(0, len(tokenized), block):
        for rt, e in embedders.items():
            for t in tokenized[start : start + block]:
                started = time.perf_counter()
                row = e.embed_tokenized([t])
                lat[rt].append(time.perf_counter() - started)
                vectors[rt].append(row)
        print(f"  queries {min(start + block, len(tokenized))}/{len(tokenized)}", flush=True)
    docs = embedders["torch"].tokenize(passages, input_type="document")
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    batches = [[docs[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    spent = dict.fromkeys(RUNTIMES, 0.0)
    doc_vectors: dict[str, list[np.ndarray]] = {rt: [] for rt in RUNTIMES}
    step = max(1, block // batch_size)
    for start in range(0, len(batches), step):
        for rt, e in embedders.items():
            for batch in batches[start : start + step]:
                started = time.perf_counter()
                doc_vectors[rt].append(e.embed_tokenized(batch))
                spent[rt] += time.perf_counter() - started
        print(f"  passage batches {min(start + step, len(batches))}/{len(batches)}", flush=True)
    doc_ref = np.concatenate(doc_vectors["torch"])
    ref = np.concatenate(vectors["torch"])
    rows = []
    for rt in RUNTIMES:
        q = _percentiles(lat[rt])
        rows.append({"runtime": rt, "summary": summary[rt], **q,
                     "query_p50_vs_torch": _percentiles(lat["torch"])["p50_ms"] / q["p50_ms"],
                     "passages_per_s": len(passages) / spent[rt], "passages_vs_torch": spent["torch"] / spent[rt],
                     "max_abs_diff": max(float(np.abs(np.concatenate(vectors[rt]) - ref).max()),
                                         float(np.abs(np.concatenate(doc_vectors[rt]) - doc_ref).max()))})
    return {"threads": torch.get_num_threads(), "queries": len(queries), "passages": len(passages),
            "batch_size": batch_size, "mean_query_tokens": float(np.mean([len(t) for t in tokenized])),
            "rows": rows}


def through_server(queries: list[str], passages: list[str], threads: int, cache_dir: Path, block: int = 50,
                   per_request: int = 32) -> dict:
    groups = [passages[i : i + per_request] for i in range(0, len(passages) - per_request + 1, per_request)]
    with tempfile.TemporaryDirectory() as tmp:
        servers = {rt: ServerProcess(Path(tmp) / rt, env={
            "RRS_EMBED_RUNTIME": rt, "RRS_QUERY_CACHE_SIZE": "0", "RRS_TORCH_THREADS": str(threads),
            "RRS_DEMO_COLLECTION": "true", "RRS_ONNX_CACHE_DIR": str(cache_dir)}) for rt in ("torch", "auto")}
        for server in servers.values():
            server.start()
        try:
            clients = {rt: s.client() for rt, s in servers.items()}
            summary = {rt: c.get("/v1/models").json()["data"][0]["runtime"] for rt, c in clients.items()}
            calls = [  # name, inputs, the call, requests per turn
                ("search", queries, lambda c, q: c.post("/v1/collections/demo/search", json={"query": q, "top_k": 10}),
                 block),
                ("embeddings", queries, lambda c, q: c.post("/v1/embeddings", json={"input": q, "model": MODEL}),
                 block),
                (f"embeddings of {per_request} passages", groups,
                 lambda c, q: c.post("/v1/embeddings", json={"input": q, "model": MODEL}), 2),
            ]
            rows = []
            for name, inputs, call, turn in calls:
                for q in inputs[:4]:  # warm-up
                    for c in clients.values():
                        call(c, q).raise_for_status()
                lat: dict[str, list[float]] = {rt: [] for rt in clients}
                hits: dict[str, list[list[str]]] = {rt: [] for rt in clients}
                queued: dict[str, list[float]] = {rt: [] for rt in clients}
                inferred: dict[str, list[float]] = {rt: [] for rt in clients}
                for start in range(0, len(inputs), turn):
                    for rt, c in clients.items():
                        for q in inputs[start : start + turn]:
                            started = time.perf_counter()
                            r = call(c, q)
                            lat[rt].append(time.perf_counter() - started)
                            r.raise_for_status()
                            timing = r.headers.get("server-timing", "")
                            queued[rt].append(_stage_ms(timing, "queue"))
                            inferred[rt].append(_stage_ms(timing, "inference"))
                            hits[rt].append([h["id"] for h in r.json().get("hits", [])])
                same = sum(a == b for a, b in zip(hits["torch"], hits["auto"], strict=True))
                base = _percentiles(lat["torch"])
                for rt in clients:
                    p = _percentiles(lat[rt])
                    texts = len(inputs) * (per_request if inputs is groups else 1)
                    rows.append({"call": name, "runtime": rt, **p, "requests": len(inputs),
                                 "texts_per_s": texts / sum(lat[rt]), "throughput_vs_torch": sum(lat["torch"]) /
                                 sum(lat[rt]), "queue_p50_ms": float(np.median(queued[rt])),
                                 "inference_p50_ms": float(np.median(inferred[rt])),
                                 "p50_vs_torch": base["p50_ms"] / p["p50_ms"],
                                 "p95_vs_torch": base["p95_ms"] / p["p95_ms"],
                                 **({"same_hits": same} if name == "search" else {})})
                print(f"  {name}: done", flush=True)
            for c in clients.values():
                c.close()
        finally:
            for server in servers.values():
                server.stop()
    return {"summary": summary, "rows": rows}


def run(dataset: Path, n_queries: int, n_passages: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    queries = load_queries(dataset, n_queries)
    passages = load_passages(dataset, n_passages)
    with tempfile.TemporaryDirectory() as cache:
        print("in-process", flush=True)
        local = in_process(queries, passages, Path(cache))
        print("through the server", flush=True)
        served = through_server(queries, passages, threads, Path(cache))
    return {"model": MODEL, "dataset": dataset.name, "baseline": "torch runtime, same run",
            "cpu_count": os.cpu_count(), "in_process": local, "server": served,
            "date": time.strftime("%Y-%m-%d")}


def to_markdown(result: dict) -> str:
    local, served = result["in_process"], result["server"]
    lines = [
        f"In-process, {local['threads']} threads: {local['queries']} queries embedded one at a time "
        f"({local['mean_query_tokens']:.1f} tokens on average), {local['passages']} passages in "
        f"{local['batch_size']}-row length-sorted batches. Baseline: {result['baseline']}.",
        "",
        "| runtime | what runs where | query p50 ms | query p95 ms | query p50 vs torch | passages/s | "
        "passages vs torch | max abs diff vs torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in local["rows"]:
        lines.append(f"| {r['runtime']} | {r['summary']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['query_p50_vs_torch']:.2f}x | {r['passages_per_s']:.1f} | {r['passages_vs_torch']:.2f}x | "
                     f"{r['max_abs_diff']:.1e} |")
    lines += [
        "",
        f"Through the server (sequential requests, two servers answering in turns; auto: "
        f"{served['summary']['auto']}):",
        "",
        "| call | runtime | requests | p50 ms | p95 ms | p50 vs torch | p95 vs torch | texts/s | texts/s vs torch | "
        "queue p50 ms | inference p50 ms | same hits as torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in served["rows"]:
        same = f"{r['same_hits']}/{r['requests']}" if "same_hits" in r else "–"
        lines.append(f"| {r['call']} | {r['runtime']} | {r['requests']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['p50_vs_torch']:.2f}x | {r['p95_vs_torch']:.2f}x | {r['texts_per_s']:.1f} | "
                     f"{r['throughput_vs_torch']:.2f}x | {r['queue_p50_ms']:.2f} | {r['inference_p50_ms']:.2f} | "
                     f"{same} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = {"torch": "tab:gray", "onnx": "tab:orange", "auto": "tab:blue"}

    def bars(ax, rows: list[dict], labels: list[str], ratio: str, ylabel: str, title: str) -> None:
        drawn = ax.bar(labels, [r["p50_ms"] for r in rows], color=[colors[r["runtime"]] for r in rows])
        for bar, r in zip(drawn, rows, strict=True):
            ax.annotate(f"{r[ratio]:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)

    local = result["in_process"]["rows"]
    bars(left, local, [r["runtime"] for r in local], "query_p50_vs_torch", "one query embedded, p50 ms",
         "in-process")
    served = [r for r in result["server"]["rows"] if r["call"] in ("search", "embeddings")]
    bars(right, served, [f"{r['call']}\n{r['runtime']}" for r in served], "p50_vs_torch",
         "one-query request p50 ms", "through the server")
    save_figure(fig, path, "Embedder runtimes on CPU (x: speed vs torch, same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embed_runtime.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/embed_runtime.png"))
    args = parser.parse_args()
    write_results(run(args.dataset, args.queries, args.passages, args.threads), args.out, args.plot,
                  to_markdown, plot)


if __name__ == "__main__":
    main()
