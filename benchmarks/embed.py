"""Embedding throughput through HTTP against in-process `SentenceTransformer.encode`, same run.

The server runs as a real subprocess (uvicorn) on 127.0.0.1; the client is one asyncio process.
The query cache is off so every text is really embedded. With `peer_python`, an established
embedding server (Infinity, `infinity_emb v2`, from its own virtualenv: its pins differ from ours)
serves the same model folder on the same machine and gets the same requests, right after ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from service.process import free_port, wait_for_http

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


async def _drive(base_url: str, texts: list[str], per_request: int, concurrency: int,
                 path: str = "/v1/embeddings", extra: dict | None = None) -> float:
    extra = {"input_type": "document"} if extra is None else extra
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        warm = await client.post(path, json={"input": texts[:per_request], **extra})  # warm connection
        warm.raise_for_status()

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                r = await client.post(path, json={"input": chunk, **extra})
                r.raise_for_status()
                if len(r.json()["data"]) != len(chunk):
                    raise RuntimeError(f"{base_url}{path}: {len(r.json()['data'])} vectors for {len(chunk)} texts")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def _http_rows(mode: str, base_url: str, texts: list[str], concurrencies: tuple[int, ...], c1_limit: int,
               path: str = "/v1/embeddings", extra: dict | None = None) -> list[Row]:
    rows: list[Row] = []
    for per_request in (32, 1):
        for conc in concurrencies:
            subset = texts if not (per_request == 1 and conc == 1) else texts[:c1_limit]
            secs = asyncio.run(_drive(base_url, subset, per_request, conc, path, extra))
            rows.append(Row(mode, per_request, conc, len(subset), secs))
    return rows


@contextmanager
def infinity_server(python: Path, model_path: str, threads: int, batch_size: int = 32) -> Iterator[str]:
    """Infinity serving `model_path` on CPU (torch engine, its defaults otherwise); yields its base URL."""
    port = free_port()
    cli = Path(python).parent / "infinity_emb"
    cmd = [str(cli), "v2", "--model-id", model_path, "--port", str(port), "--host", "127.0.0.1",
           "--engine", "torch", "--device", "cpu", "--batch-size", str(batch_size), "--no-model-warmup"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1"}
    log_path = Path("var") / "bench-embed-infinity.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", proc, 300, log_path.read_text)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run(dataset: Path = DEFAULT_DATASET, n_texts: int = 2000, concurrencies: tuple[int, ...] = (1, 8, 32),
        model: str = "sentence-transformers/all-MiniLM-L6-v2", threads: int | None = None,
        single_text_c1_limit: int = 400, peer_python: Path | None = None) -> dict:
    from models.resolve import resolve_model
    from service.process import ServerProcess

    threads = threads or os.cpu_count() or 2
    texts = load_passages(dataset, n_texts)
    baseline_before = in_process_baseline(model, texts, threads)
    data_dir = Path("var/bench-embed")
    server = ServerProcess(data_dir, env={"RRS_QUERY_CACHE_SIZE": "0", "RRS_EMBED_MODEL": model,
                                       "RRS_TORCH_THREADS": str(threads), "RRS_MAX_QUEUE_REQUESTS": "4096",
                                       # a throughput run: 32 queued 32-text requests may wait longer than
                                       # the 30 s default deadline on a slow CPU (Infinity has none)
                                       "RRS_REQUEST_TIMEOUT_S": "600"})
    server.start()
    try:
        rows = _http_rows("http", server.base_url, texts, concurrencies, single_text_c1_limit)
    finally:
        server.stop()
    peer: dict | None = None
    if peer_python is not None:
        model_path = resolve_model(model).path
        with infinity_server(peer_python, model_path, threads) as base:
            version = subprocess.run([str(peer_python), "-c", "import infinity_emb; print(infinity_emb.__version__)"],
                                     capture_output=True, text=True, check=False).stdout.strip()
            peer_rows = _http_rows("infinity", base, texts, concurrencies, single_text_c1_limit,
                                   path="/embeddings", extra={"model": model_path})
        peer = {"name": f"Infinity {version} (infinity_emb v2, torch engine, CPU, batch size 32)",
                "rows": [{**asdict(r), "docs_per_s": r.docs_per_s} for r in peer_rows]}
    # Measured before and after the HTTP runs: the mean is the baseline, the spread shows the noise.
    baseline_after = in_process_baseline(model, texts, threads)
    baseline_s = (baseline_before + baseline_after) / 2
    base_rate = len(texts) / baseline_s
    result = {
        "model": model,
        "texts": len(texts),
        "threads": threads,
        "baseline": {"name": "SentenceTransformer.encode(batch_size=32), in-process",
                     "seconds": baseline_s, "docs_per_s": base_rate,
                     "docs_per_s_before": len(texts) / baseline_before,
                     "docs_per_s_after": len(texts) / baseline_after},
        "rows": [{**asdict(r), "docs_per_s": r.docs_per_s, "ratio": r.docs_per_s / base_rate} for r in rows],
    }
    if peer is not None:
        for ours, theirs in zip(result["rows"], peer["rows"], strict=True):
            theirs["ratio"] = theirs["docs_per_s"] / base_rate
            ours["vs_peer"] = ours["docs_per_s"] / theirs["docs_per_s"]
        result["peer"] = peer
    return result


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
    peer = result.get("peer")
    if peer:
        lines[-2:] = [f"Peer in the same run: {peer['name']}.", "",
                      "| texts/request | concurrency | docs | rrs docs/s | ratio vs in-process | "
                      "Infinity docs/s | ratio vs in-process | rrs vs Infinity |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(result["rows"]):
        line = (f"| {r['texts_per_request']} | {r['concurrency']} | {r['docs']} | {r['docs_per_s']:.1f} | "
                f"{r['ratio']:.2f}x |")
        if peer:
            p = peer["rows"][i]
            line += f" {p['docs_per_s']:.1f} | {p['ratio']:.2f}x | **{r['vs_peer']:.2f}x** |"
        lines.append(line)
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
    peer = result.get("peer")
    x = list(range(len(rows)))
    width = 0.4 if peer else 0.8
    colors = ["#3b75af" if r["texts_per_request"] > 1 else "#ef8636" for r in rows]
    bars = ax.bar([i - (width / 2 if peer else 0) for i in x], [r["docs_per_s"] for r in rows], width,
                  color=colors, label="rrs" if peer else None)
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    if peer:
        theirs = ax.bar([i + width / 2 for i in x], [r["docs_per_s"] for r in peer["rows"]], width,
                        color="#9a9a9a", label=peer["name"].split(" (")[0])
        for bar, r in zip(theirs, peer["rows"], strict=True):
            ax.annotate(f"{r['ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.axhline(base, color="black", linestyle="--", linewidth=1,
               label=f"in-process encode(batch_size=32): {base:.1f} docs/s")
    ax.set_ylabel("documents / s through HTTP")
    versus = f" vs {peer['name'].split(' (')[0]}" if peer else ""
    ax.set_title(f"rrs /v1/embeddings{versus}, {result['model'].split('/')[-1]}, {result['threads']} threads")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
