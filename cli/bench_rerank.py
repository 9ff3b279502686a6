"""`rrs bench rerank`: pointwise pairs/s with shared-prefix reuse vs each pair scored independently."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.bench import bench_app


@bench_app.command("rerank")
def bench_rerank(
    dataset: Path = typer.Option(None, help="BEIR folder; default ../shared/data/msmarco-dl-5k."),
    docs: int = typer.Option(100, min=1, help="Documents scored against one query."),
    doc_tokens: int = typer.Option(100, min=8, help="Tokens per document (longer passages are cut)."),
    rounds: int = typer.Option(3, min=1, help="Interleaved timed rounds per engine (medians kept)."),
    model: str = typer.Option(None, help="Causal LM (default: the shipped SmolLM2-135M-Instruct GGUF)."),
    compact: bool = typer.Option(True, "--compact/--default-template",
                                 help="A ~60-token judge prefix (the issue's shape) or the default template."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JSON results here."),
    requests: int = typer.Option(0, min=0, help="Also time this many small requests in flight: one by "
                                 "one vs coalesced into one call (0: skip)."),
    request_docs: int = typer.Option(10, min=1, help="Documents per request for --requests."),
) -> None:
    """fp32 on CPU; the ratio is against the padded per-pair baseline measured in the same run."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks.rerank import DEFAULT_DATASET, run, run_coalescing
    from models.llm.loading import DEFAULT_RERANK_LLM

    result = run(dataset or DEFAULT_DATASET, docs, doc_tokens, rounds, model or DEFAULT_RERANK_LLM, compact)
    table = Table(title=f"pointwise, {result['docs']} docs (~{result['mean_suffix_tokens']:.0f} tokens each "
                        f"after the prefix), {result['prefix_tokens']}-token prefix, {result['threads']} threads; "
                        f"FLOP ratio {result['flop_ratio_padded_over_cache']:.2f}, GEMM {result['gemm_gflops']:.0f} "
                        "GFLOP/s")
    for col in ("engine", "CPU s", "pairs/CPU-s", "x padded (CPU)", "wall s", "x padded (wall)", "GFLOP",
                "of GEMM rate"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for name, row in result["engines"].items():
        table.add_row(name, f"{row['cpu_seconds']:.1f}", f"{row['pairs_per_cpu_s']:.2f}",
                      f"{row['speedup_vs_padded_cpu']:.2f}", f"{row['wall_seconds']:.1f}",
                      f"{row['speedup_vs_padded_wall']:.2f}", f"{row['gflop']:.0f}",
                      f"{row['fraction_of_gemm_rate']:.0%}")
    Console().print(table)
    Console().print(f"max |score(cache) - score(padded)| = {result['max_score_diff']:.1e}")
    if requests:
        co = run_coalescing(dataset or DEFAULT_DATASET, requests, request_docs, doc_tokens, rounds,
                            model or DEFAULT_RERANK_LLM)
        result["coalescing"] = co
        table = Table(title=f"{co['requests']} pointwise requests of {co['docs_per_request']} docs in flight, "
                            f"{co['threads']} threads (cache engine)")
        for col in ("how", "wall s", "pairs/s", "x one by one"):
            table.add_column(col, justify="left" if col == "how" else "right")
        for name, speed in (("one by one", 1.0), ("coalesced", co["speedup"])):
            row = co["one_by_one" if name == "one by one" else "coalesced"]
            table.add_row(name, f"{row['wall_seconds']:.2f}", f"{row['pairs_per_s']:.2f}", f"{speed:.2f}")
        Console().print(table)
        Console().print(f"max |score(coalesced) - score(alone)| = {co['max_score_diff']:.1e}")
    if output:
        output.write_text(json.dumps(result, indent=1))
