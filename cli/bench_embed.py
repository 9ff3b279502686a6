"""`rrs bench embed`: HTTP embedding throughput vs in-process encode, same run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.bench import bench_app


@bench_app.command("embed")
def bench_embed(
    dataset: Path = typer.Option(Path("../shared/data/msmarco-dl-5k"), help="BEIR folder with corpus.jsonl."),
    n_texts: int = typer.Option(2000, help="Passages to embed."),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", help="Embedding model."),
    out: Path = typer.Option(None, help="Write the JSON result here too."),
    plot_path: Path = typer.Option(None, "--plot", help="Write a PNG bar chart here."),
    peer_python: Path = typer.Option(None, help="Python of a virtualenv with infinity-emb[server]: Infinity "
                                     "serves the same model and gets the same requests (peer, same run)."),
) -> None:
    """Documents/s through HTTP at concurrency 1, 8, 32 (32-text and 1-text requests)."""
    from benchmarks.embed import plot, run, to_markdown

    result = run(dataset=dataset, n_texts=n_texts, model=model, peer_python=peer_python)
    typer.echo(to_markdown(result))
    if out:
        out.write_text(json.dumps(result, indent=2))
    if plot_path:
        plot(result, plot_path)
