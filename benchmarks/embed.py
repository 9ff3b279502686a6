"""Embedding throughput through HTTP against in-process `SentenceTransformer.encode`, same run.

The server runs as a real subprocess (uvicorn) on 127.0.0.1; the client is one asyncio process.
The query cache is off so every text is really embedded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

DEFAULT_DATASET = Path("../shared/data/msmarco-dl-5k")


@dataclass
class Row:
    mode: str
    texts_per_request: int
    concurrency: int
    docs: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds


def load_passages(dataset: Path, n: int) -> list[str]:
    texts: list[str] = []
    with open(dataset / "corpus.jsonl") as fh:
        for line in fh:
            doc = json.loads(line)
            text = (doc.get("title", "") + " " + doc["text"]).strip()
            texts.append(text)
            if len(texts) >= n:
                break
    return texts


def in_process_baseline(model_name: str, texts: list[str], threads: int) -> float:
    """Seconds for `encode(batch_size=32)` on the texts (after one warm-up batch)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from models.resolve import resolve_model

    torch.set_num_threads(threads)
    st = SentenceTransformer(resolve_model(model_name).path, device="cpu")
    st.encode(texts[:32], batch_size=32)
    start = time.perf_counter()
    st.encode(texts, batch_size=32)
    elapsed = time.perf_counter() - start
    del st
    return elapsed


async def _drive(base_url: str, texts: list[str], per_request: int, concurrency: int) -> float:
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        await client.post("/v1/embeddings", json={"input": texts[:per_request]})  # warm connection

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                r = await client.post("/v1/embeddings", json={"input": chunk, "input_type": "document"})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def run(dataset: Path = DEFAULT_DATASET, n_texts: int = 2000, concurrencies: tuple[int, ...] = (1, 8, 32),
        model: str = "sentence-transformers/all-MiniLM-L6-v2", threads: int | None = None,
        single_text_c1_limit: int = 400) -> dict:
    from service.process import ServerProcess

    threads = threads or os.cpu_count() or 2
    texts = load_passages(dataset, n_texts)
    baseline_before = in_process_baseline(model, texts, threads)
    rows: list[Row] = []
    data_dir = Path("var/bench-embed")
    server = ServerProcess(data_dir, env={"RRS_QUERY_CACHE_SIZE": "0", "RRS_EMBED_MODEL": model,
                                       "RRS_TORCH_THREADS": str(threads), "RRS_MAX_QUEUE_REQUESTS": "4096"})
    server.start()
    try:
        for per_request in (32, 1):
            for conc in concurrencies:
                subset = texts if not (per_request == 1 and conc == 1) else texts[:single_text_c1_limit]
                secs = asyncio.run(_drive(server.base_url, subset, per_request, conc))
                rows.append(Row("http", per_request, conc, len(subset), secs))
    finally:
        server.stop()
    # Measured before and after the HTTP runs: the mean is the baseline, the spread shows the noise.
    baseline_after = in_process_baseline(model, texts, threads)
    baseline_s = (baseline_before + baseline_after) / 2
    base_rate = len(texts) / baseline_s
    return {
        "model": model,
        "texts": len(texts),
        "threads": threads,
        "baseline": {"name": "SentenceTransformer.encode(batch_size=32), in-process",
                     "seconds": baseline_s, "docs_per_s": base_rate,
                     "docs_per_s_before": len(texts) / baseline_before,
                     "docs_per_s_after": len(texts) / baseline_after},
        "rows": [{**asdict(r), "docs_per_s": r.docs_per_s, "ratio": r.docs_per_s / base_rate} for r in rows],
    }


def to_markdown(result: dict) -> str:
    b = result["baseline"]
    lines = [
        f"Baseline: {b['name']}: {b['docs_per_s']:.1f} docs/s (before the HTTP runs "
        f"{b['docs_per_s_before']:.1f}, after {b['docs_per_s_after']:.1f}; {result['texts']} passages, "
        f"{result['threads']} torch threads).",
        "",
        "| texts/request | concurrency | docs | docs/s | ratio vs in-process |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['texts_per_request']} | {r['concurrency']} | {r['docs']} | {r['docs_per_s']:.1f} | "
                     f"{r['ratio']:.2f}x |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Bars of docs/s per (texts/request, concurrency), the in-process baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    base = result["baseline"]["docs_per_s"]
    labels = [f"{r['texts_per_request']} text{'s' if r['texts_per_request'] > 1 else ''}\nc={r['concurrency']}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colors = ["#3b75af" if r["texts_per_request"] > 1 else "#ef8636" for r in rows]
    bars = ax.bar(labels, [r["docs_per_s"] for r in rows], color=colors)
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(base, color="black", linestyle="--", linewidth=1,
               label=f"in-process encode(batch_size=32): {base:.1f} docs/s")
    ax.set_ylabel("documents / s through HTTP")
    ax.set_title(f"rrs /v1/embeddings, {result['model'].split('/')[-1]}, {result['threads']} threads")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
