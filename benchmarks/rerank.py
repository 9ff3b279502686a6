"""Pointwise reranking throughput: shared-prefix KV reuse vs scoring every pair independently.

Both sides run the same `PointwiseReranker` end to end (prompt rendering, tokenization, forward,
yes/no projection) on the same model, query and documents, in the same process, rounds
interleaved so machine noise hits both alike. The baseline ("padded") runs every full
(instruction + query + document) sequence, length-sorted and right-padded under the same token
budget; the prefix engine ("cache") runs the instruction + query once and only the documents per
pair. The floor: model FLOPs of each side over this machine's measured fp32 GEMM rate.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from indexing.evaluation import BeirDataset, EvalReport, SystemResult, load_beir
from models.llm.loading import DEFAULT_RERANK_LLM, CausalLM, load_causal_lm
from models.rerankers.base import Reranker, truncate_text
from models.rerankers.llm_base import split_prompt
from models.rerankers.pointwise import JudgeTemplate, PointwiseReranker

DEFAULT_DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "msmarco-dl-5k"

# The issue's shape: a ~60-token instruction + query prefix (with SmolLM2's chat wrapper).
COMPACT_TEMPLATE = JudgeTemplate(
    system='You judge search results. Given a search query and a passage, answer "yes" if the passage '
           'answers the query and "no" otherwise.',
    user="Query: {query}\nDoes the Document below answer the Query?\nDocument: {document}",
)


def benchmark_documents(dataset: Path, lm: CausalLM, count: int, doc_tokens: int) -> tuple[str, list[str]]:
    """The first judged query and the first `count` passages of at least `doc_tokens` tokens, cut to it."""
    beir = load_beir(dataset)
    query = next(iter(beir.queries.values()))
    docs: list[str] = []
    with open(beir.corpus_path, encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            if len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) >= doc_tokens:
                docs.append(truncate_text(lm.tokenizer, text, doc_tokens))
            if len(docs) == count:
                break
    return query, docs


def gemm_gflops(seconds: float = 1.0) -> float:
    """This process's fp32 matmul rate per CPU-second at a transformer-like shape (the ceiling)."""
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    torch.mm(a, b)
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024 * 576 * 1536 * n / (time.process_time() - start) / 1e9


def forward_gflop(lm: CausalLM, prefix: int, suffixes: list[int], share_prefix: bool) -> float:
    """Linear-layer plus attention FLOPs of scoring every suffix after the prefix."""
    cfg = lm.model.config.get_text_config()
    embed = lm.model.get_input_embeddings().weight.numel()
    linear = sum(p.numel() for p in lm.model.parameters()) - embed  # tied head: only 2 rows used
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size

    def seq_flops(start: int, length: int) -> float:  # tokens start..start+length-1 attending causally
        ctx = sum(start + i + 1 for i in range(length))
        return 2 * linear * length + 4 * layers * hidden * ctx

    if share_prefix:
        return (seq_flops(0, prefix) + sum(seq_flops(prefix, s) for s in suffixes)) / 1e9
    return sum(seq_flops(0, prefix + s) for s in suffixes) / 1e9


def run(dataset: Path = DEFAULT_DATASET, docs: int = 100, doc_tokens: int = 100, rounds: int = 3,
        model: str = DEFAULT_RERANK_LLM, compact: bool = True) -> dict[str, Any]:
    lm = load_causal_lm(model, device="cpu", dtype="float32")
    template = COMPACT_TEMPLATE if compact else None
    query, texts = benchmark_documents(dataset, lm, docs, doc_tokens)
    engines = {name: PointwiseReranker(lm, engine=name, template=template) for name in ("padded", "cache")}
    t = engines["cache"].template
    parts = split_prompt(lm, t.system, t.user.format(instruction=t.instruction, query=query, document="{varying}"),
                         t.assistant_start)
    suffix_lengths = [len(lm.encode(parts.lead + d + parts.tail)) for d in texts]
    engines["cache"].score(query, texts[:4])  # warm-up: first-call allocations stay out of the timings
    # Wall time and this process's CPU time: on a shared machine the CPU time is what contention
    # does not inflate (with one torch thread they agree on a quiet machine).
    wall: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    rates: list[float] = []
    scores: dict[str, list[float]] = {}
    for _ in range(rounds):
        rates.append(gemm_gflops())
        for name, reranker in engines.items():
            w, c = time.perf_counter(), time.process_time()
            scores[name] = reranker.score(query, texts)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    rate = max(rates)
    rows: dict[str, dict[str, Any]] = {}
    for name in engines:
        cpu_s, wall_s = statistics.median(cpu[name]), statistics.median(wall[name])
        gflop = forward_gflop(lm, len(parts.prefix_ids), suffix_lengths, share_prefix=name == "cache")
        rows[name] = {"cpu_seconds": cpu_s, "wall_seconds": wall_s, "cpu_all": cpu[name], "wall_all": wall[name],
                      "pairs_per_cpu_s": len(texts) / cpu_s, "pairs_per_wall_s": len(texts) / wall_s,
                      "gflop": gflop, "fraction_of_gemm_rate": gflop / cpu_s / rate}
    for name in rows:
        rows[name]["speedup_vs_padded_cpu"] = rows["padded"]["cpu_seconds"] / rows[name]["cpu_seconds"]
        rows[name]["speedup_vs_padded_wall"] = rows["padded"]["wall_seconds"] / rows[name]["wall_seconds"]
    max_diff = max(abs(a - b) for a, b in zip(scores["cache"], scores["padded"], strict=True))
    return {
        "model": model, "docs": len(texts), "prefix_tokens": len(parts.prefix_ids),
        "mean_suffix_tokens": sum(suffix_lengths) / len(suffix_lengths), "rounds": rounds,
        "threads": torch.get_num_threads(), "gemm_gflops": rate,
        "flop_ratio_padded_over_cache": rows["padded"]["gflop"] / rows["cache"]["gflop"],
        "max_score_diff": max_diff, "engines": rows, "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def rerank_stage(reranker: Reranker, candidates: int, name: str) -> Callable[[EvalReport, BeirDataset], SystemResult]:
    """An `evaluate(..., extra_stages=)` stage: rerank each query's first dense `candidates`.

    The reranked head goes above the rest of the dense list (kept in order), as in the service's
    search cascade; per-query seconds are recorded as the "rerank" latency.
    """

    def stage(report: EvalReport, data: BeirDataset) -> SystemResult:
        assert report.dense is not None, "the rerank stage needs the dense run"
        run: dict[str, dict[str, float]] = {}
        rerank_ms: list[float] = []
        for qid, query in tqdm(data.queries.items(), desc=f"rerank {name}", unit="query"):
            ranked = [doc for doc, _ in report.dense.candidates[qid]]
            head = ranked[:candidates]
            start = time.perf_counter()
            order = reranker.rank(query, [report.dense.texts[d] for d in head])
            rerank_ms.append((time.perf_counter() - start) * 1e3)
            final = [head[i] for i in order] + ranked[candidates:]
            run[qid] = {doc: float(len(final) - pos) for pos, doc in enumerate(final)}
        dense_ms = report.dense.system.latency_ms.get("total", [])
        total = [a + b for a, b in zip(dense_ms, rerank_ms, strict=False)] if dense_ms else rerank_ms
        return SystemResult(name, run, latency_ms={"rerank": rerank_ms, "total": total})

    return stage


def eval_rerank_stage(method: str, candidates: int, model: str | None,
                      encoder: Any) -> Callable[[EvalReport, BeirDataset], SystemResult]:
    """The stage `rrs eval --rerank METHOD` adds: `encoder` serves the embedding method."""
    from models.rerankers import build_reranker

    reranker = build_reranker(method, model=model, encode=encoder.encode,
                              **({"tokenizer": encoder.tokenizer} if method == "embedding" else {}))
    return rerank_stage(reranker, candidates, f"dense+{method}@{candidates}")


def run_coalescing(dataset: Path = DEFAULT_DATASET, requests: int = 8, docs: int = 10, doc_tokens: int = 100,
                   rounds: int = 3, model: str = DEFAULT_RERANK_LLM) -> dict[str, Any]:
    """Several small pointwise requests in flight: one after another vs coalesced into one call.

    What the server does with requests that wait for a busy model (`RerankService` hands them to
    `score_many` together): each query's prefix still runs once, their documents share batches.
    """
    lm = load_causal_lm(model, device="cpu", dtype="float32")
    beir = load_beir(dataset)
    queries = list(beir.queries.values())[:requests]
    _, texts = benchmark_documents(dataset, lm, requests * docs, doc_tokens)
    batch = [(q, texts[i * docs:(i + 1) * docs]) for i, q in enumerate(queries)]
    reranker = PointwiseReranker(lm, engine="cache", template=COMPACT_TEMPLATE)
    reranker.score_many(batch[:2])  # warm-up
    seq: list[float] = []
    together: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        alone = [reranker.score(q, d) for q, d in batch]
        seq.append(time.perf_counter() - start)
        start = time.perf_counter()
        merged = reranker.score_many(batch)
        together.append(time.perf_counter() - start)
    max_diff = max(abs(a - b) for x, y in zip(alone, merged, strict=True) for a, b in zip(x, y, strict=True))
    seq_s, together_s = statistics.median(seq), statistics.median(together)
    pairs = requests * docs
    return {"requests": len(batch), "docs_per_request": docs, "pairs": pairs, "threads": torch.get_num_threads(),
            "one_by_one": {"wall_seconds": seq_s, "wall_all": seq, "pairs_per_s": pairs / seq_s},
            "coalesced": {"wall_seconds": together_s, "wall_all": together, "pairs_per_s": pairs / together_s},
            "speedup": seq_s / together_s, "max_score_diff": max_diff, "date": time.strftime("%Y-%m-%d")}
