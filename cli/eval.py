"""`rrs eval`: retrieval quality (nDCG@10, R@100, MRR@10) and latency on a BEIR folder, vs BM25."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.main import app

if TYPE_CHECKING:
    from indexing.evaluation import EvalReport

DEFAULT_DATASET = Path("../shared/data/msmarco-dl-5k")


@app.command("eval")
def eval_command(
    dataset: Path = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="BEIR folder (corpus, queries, qrels)."),
    collection: str = typer.Option(None, "--collection", "-c", help="Collection to (re)use; default per dataset."),
    model: str = typer.Option(None, help="Embedding model (default RRS_EMBED_MODEL)."),
    index_kind: str = typer.Option("flat", "--index", help="Index kind for a new collection."),
    data_dir: Path = typer.Option(None, help="Data directory (default RRS_DATA_DIR)."),
    device: str = typer.Option("auto", help="Embedding device."),
    attention_temperature: float = typer.Option(
        None, min=0.01, help="TempScale attention temperature (default RRS_EMBED_ATTENTION_TEMPERATURE, 1)."),
    k: int = typer.Option(100, min=10, help="Candidates retrieved per query."),
    chunk_tokens: int = typer.Option(
        None, min=0, help="New collection: chunk window in tokens (default: the model's; 0: no chunking)."),
    chunk_overlap: int = typer.Option(None, min=0, help="Tokens consecutive chunks share (default chunk_tokens/8)."),
    lexical_stemmer: str = typer.Option(
        None, help="New collection: stemming of its lexical index, none (language-neutral, the default) or "
        "porter (English)."),
    bm25: bool = typer.Option(True, "--bm25/--no-bm25", help="Score the BM25 baseline in the same run."),
    modes: str = typer.Option("lexical,hybrid", help="The collection's other search modes to score beside dense "
                              "(comma-separated: lexical = its FTS5 BM25, hybrid = RRF of both; '' for none)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JSON report here."),
    rerank: str = typer.Option(None, "--rerank", help="Also rerank the dense candidates with this method "
                               "(pointwise, graded, listwise, first, pairwise, embedding, cross-encoder)."),
    rerank_candidates: int = typer.Option(20, "--rerank-candidates", min=2, help="Dense candidates reranked."),
    rerank_model: str = typer.Option(None, "--rerank-model", help="Reranker model (default: the method's)."),
    lexical_weight: float = typer.Option(1.0, min=0.0, help="Hybrid: weight of the lexical ranking in the fusion."),
    feedback: bool = typer.Option(
        False, "--feedback", help="Score the existing --collection against the judgments recorded with POST "
        "/v1/collections/NAME/feedback instead of a BEIR folder (unjudged hits count as not relevant)."),
) -> None:
    """Index (or reuse) the corpus, run the judged queries, print a table and write JSON."""
    from indexing.evaluation import evaluate
    from models.embedder import load_embedder
    from models.embedder.tempscale import space_id
    from service.settings import Settings

    settings = Settings()
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if feedback:
        report = _feedback_report(collection, data_dir or settings.data_dir, device, k, mode_list, lexical_weight)
        _print_and_save(report, f"collection {report.collection}: recorded feedback", output)
        return
    if lexical_stemmer not in (None, "none", "porter"):
        typer.echo(f"error: --lexical-stemmer: one of none, porter, got {lexical_stemmer!r}", err=True)
        raise typer.Exit(2)
    if not (dataset / "corpus.jsonl").exists():
        typer.echo(f"error: {dataset} is not a BEIR folder (no corpus.jsonl)", err=True)
        raise typer.Exit(2)
    temperature = settings.embed_attention_temperature if attention_temperature is None else attention_temperature
    encoder = load_embedder(model or settings.embed_model, device=device, attention_temperature=temperature)
    model_name = space_id(model or settings.embed_model, temperature)
    extra_stages = []
    if rerank:
        from benchmarks.rerank import eval_rerank_stage

        extra_stages.append(eval_rerank_stage(rerank, rerank_candidates, rerank_model, encoder))
    report = evaluate(
        dataset,
        data_dir or settings.data_dir,
        encoder,
        model_name=model_name,
        collection=collection,
        index_kind=index_kind,
        k=k,
        bm25=bm25,
        extra_stages=extra_stages,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        modes=mode_list,
        lexical_weight=lexical_weight,
        lexical_stemmer=lexical_stemmer,
    )
    _print_and_save(report, f"{dataset}, collection {report.collection}", output)


def _feedback_report(
    collection: str | None, data_dir: Path, device: str, k: int, modes: list[str], lexical_weight: float
) -> EvalReport:
    """Score an existing collection on its own recorded judgments (queries and qrels from feedback.sqlite3)."""
    from indexing.aliases import resolve as resolve_alias
    from indexing.collection import Collection
    from indexing.evaluation import EvalReport, score_collection
    from models.embedder import load_space_embedder

    if not collection:
        typer.echo("error: --feedback scores an existing collection: give --collection NAME", err=True)
        raise typer.Exit(2)
    root = Path(data_dir) / "collections"
    folder = root / resolve_alias(root, collection)
    if not (folder / "store.sqlite3").exists():
        typer.echo(f"error: collection: {collection!r} does not exist under {data_dir}", err=True)
        raise typer.Exit(2)
    coll = Collection.open(folder)
    try:
        queries, qrels = coll.feedback.labels()
        if not queries:
            typer.echo(f"error: feedback: collection {collection!r} has no recorded judgments "
                       "(POST /v1/collections/NAME/feedback)", err=True)
            raise typer.Exit(2)
        encoder = load_space_embedder(coll.config.model, device=device)
        report = EvalReport("feedback", collection, coll.config.model, len(queries))
        score_collection(report, coll, encoder, queries, qrels, k, modes, lexical_weight)
    finally:
        coll.close(snapshot=False)
    return report


def _print_and_save(report: EvalReport, title: str, output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} ({report.queries} judged queries)")
    for col in ("system", "nDCG@10", "R@100 (rel>=2)", "MRR@10 (rel>=2)", "latency p50 ms", "p95 ms"):
        table.add_column(col, justify="right" if col != "system" else "left")
    for name, system in report.systems.items():
        lat = system.latency_summary().get("total", {})
        table.add_row(
            name,
            *(f"{system.metrics[m]:.3f}" for m in ("nDCG@10", "R@100", "MRR@10")),
            f"{lat.get('p50', float('nan')):.1f}",
            f"{lat.get('p95', float('nan')):.1f}",
        )
    Console().print(table)
    if "dense" in report.systems:
        stages = report.systems["dense"].latency_summary()
        typer.echo("dense latency p50: " + ", ".join(f"{s} {v['p50']:.1f} ms" for s, v in stages.items()))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_json(), indent=2))
        typer.echo(f"wrote {output}")
