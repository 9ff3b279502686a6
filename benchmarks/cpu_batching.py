"""Why the CPU batch defaults are what they are: in-process sweeps on the MS MARCO slice.

`python -m benchmarks.cpu_batching` prints, on this machine:
- the embedder on 2,000 passages in 32-text chunks: one padded batch per chunk vs the chunk cut
  where padding would pass 1.1x (what the server's batcher does), and the padding each leaves;
- the embedder on the same passages, globally length-sorted, per batch size (per-token cost);
- the pointwise reranker's cache engine on one query and 100 passages, per token budget.
Each row is one timed pass after a warm-up; rerun for the spread.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.embed import DEFAULT_DATASET, load_passages
from service.batching import padded_runs


def _cut(lengths: list[int], ratio: float) -> list[list[int]]:
    """Indices of one chunk, length-sorted, cut where padded tokens would pass `ratio` x real (the server's rule)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    runs = padded_runs([lengths[i] for i in order], len(order), sum(lengths) * len(order), ratio)
    return [order[start:end] for start, end, _ in runs]


def embed_sweep(dataset: Path = DEFAULT_DATASET, n_texts: int = 2000) -> dict[str, float]:
    from models.embedder import load_embedder

    texts = load_passages(dataset, n_texts)
    embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    toks = embedder.tokenize(texts)
    lengths = [len(t) for t in toks]
    embedder.embed_tokenized(toks[:32])
    out: dict[str, float] = {}
    chunks = [list(range(i, min(i + 32, len(toks)))) for i in range(0, len(toks), 32)]
    padded = sum(max(lengths[i] for i in c) * len(c) for c in chunks)
    out["one_batch_per_32_padding"] = padded / sum(lengths)
    start = time.perf_counter()
    for c in chunks:
        embedder.embed_tokenized([toks[i] for i in c])
    out["one_batch_per_32_docs_s"] = len(toks) / (time.perf_counter() - start)
    start, padded = time.perf_counter(), 0
    for c in chunks:
        for g in _cut([lengths[i] for i in c], 1.1):
            batch = [toks[c[j]] for j in g]
            padded += max(len(t) for t in batch) * len(batch)
            embedder.embed_tokenized(batch)
    out["cut_at_1.1_docs_s"] = len(toks) / (time.perf_counter() - start)
    out["cut_at_1.1_padding"] = padded / sum(lengths)
    for batch_size in (8, 16, 32, 64, 128):
        start = time.perf_counter()
        embedder.encode(texts, batch_size=batch_size)
        out[f"sorted_batch_{batch_size}_docs_s"] = len(texts) / (time.perf_counter() - start)
    return out


def rerank_budget_sweep(dataset: Path = DEFAULT_DATASET) -> dict[str, float]:
    from benchmarks.rerank import COMPACT_TEMPLATE, benchmark_documents
    from models.llm.loading import load_causal_lm
    from models.rerankers.pointwise import PointwiseReranker

    lm = load_causal_lm(device="cpu", dtype="float32")
    query, docs = benchmark_documents(dataset, lm, 100, 100)
    out: dict[str, float] = {}
    for budget in (1024, 2048, 4096, 8192):
        reranker = PointwiseReranker(lm, engine="cache", token_budget=budget, template=COMPACT_TEMPLATE)
        reranker.score(query, docs[:4])
        start = time.perf_counter()
        reranker.score(query, docs)
        out[f"cache_budget_{budget}_s"] = time.perf_counter() - start
    return out


def main() -> None:
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    for name, value in {**embed_sweep(), **rerank_budget_sweep()}.items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
