"""`rrs bench attention`: reranker pairs/s, packed shared-prefix scoring vs the padded per-pair baseline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.bench import bench_app


@bench_app.command("attention")
def bench_attention(
    dataset: Path = typer.Option(None, help="BEIR-style folder (corpus.jsonl, queries.jsonl); "
                                 "default ../shared/data/msmarco-dl-5k."),
    docs: int = typer.Option(100, min=1, help="Documents scored against one query."),
    doc_tokens: int = typer.Option(100, min=8, help="Document length cap in tokens."),
    repeats: int = typer.Option(1, min=1, help="Timed runs per engine (best kept)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JSON results here."),
) -> None:
    """Shipped SmolLM2 (fp32 on CPU); ratios are against the padded engine in the same run.

    GPU kernel TFLOP/s and exact-search figures come from `python benchmarks/gpu_suite.py` on a GPU.
    """
    from rich.console import Console
    from rich.table import Table

    from benchmarks.attention import DEFAULT_DATASET, run

    result = run(dataset or DEFAULT_DATASET, docs, doc_tokens, repeats=repeats)
    table = Table(title=f"{result['docs']} docs (~{result['mean_doc_tokens']:.0f} tokens), "
                        f"{result['prefix_tokens']}-token prefix, {result['threads']} threads")
    for col in ("engine", "s", "pairs/s", "x padded", "max |score diff|"):
        table.add_column(col)
    for name, row in result["engines"].items():
        table.add_row(name, f"{row['seconds']:.2f}", f"{row['pairs_per_s']:.1f}",
                      f"{row['speedup_vs_padded']:.2f}", f"{row['max_score_diff_vs_padded']:.1e}")
    Console().print(table)
    if output:
        output.write_text(json.dumps(result, indent=1))
