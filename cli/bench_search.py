"""`rrs bench search`: ANN recall@10 and QPS per index kind vs exact, and endpoint vs direct FAISS."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.bench import bench_app


@bench_app.command("search")
def bench_search(
    sizes: str = typer.Option("100000,1000000", help="Corpus sizes, comma-separated."),
    kinds: str = typer.Option("hnsw,ivf_flat,ivf_pq", help="Index kinds besides exact flat."),
    queries: int = typer.Option(1000, min=10, help="Queries per measurement."),
    endpoint_n: int = typer.Option(100_000, help="Collection size for the endpoint-vs-FAISS run (0: skip)."),
    threads: int = typer.Option(None, help="FAISS OpenMP threads (default: all cores)."),
    torch_device: str = typer.Option(None, help="Also time the torch exact backend on this device (cuda)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JSON results here."),
) -> None:
    """Synthetic clustered 384-d vectors; every ratio is against exact search in the same run."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks.search import run

    result = run(
        [int(s) for s in sizes.split(",") if s],
        [k for k in kinds.split(",") if k],
        queries,
        endpoint_n or None,
        threads,
        torch_device,
    )
    console = Console()
    table = Table(title=f"ANN vs exact (recall@10, {queries} queries, {result['threads']} FAISS threads)")
    for col in ("n", "kind", "setting", "build s", "recall@10", "QPS", "x exact"):
        table.add_column(col, justify="left" if col in ("kind", "setting") else "right")
    for r in result["ann"]:
        mark = " *" if r["default"] else ""
        table.add_row(
            f"{r['n']:,}",
            r["kind"],
            r["param"] + mark,
            f"{r['build_s']:.1f}",
            f"{r['recall_at_10']:.3f}",
            f"{r['qps']:,.0f}",
            f"{r['speedup_vs_exact']:.1f}",
        )
    console.print(table)
    console.print("* = the setting the service uses by default")
    if result["endpoint"]:
        et = Table(title="single-query latency, same index, sequential requests")
        for col in ("n", "index", "path", "p50 ms", "p95 ms"):
            et.add_column(col)
        for r in result["endpoint"]:
            et.add_row(f"{r['n']:,}", r["kind"], r["path"], f"{r['p50_ms']:.3f}", f"{r['p95_ms']:.3f}")
        console.print(et)
        overhead = result["endpoint"][2]["p50_ms"] - result["endpoint"][0]["p50_ms"]
        console.print(f"endpoint overhead over the direct FAISS call at p50: {overhead:.2f} ms")
    if output:
        output.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {output}")
