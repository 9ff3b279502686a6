"""`rrs index`: the batch indexing job (JSONL/CSV/Parquet -> a collection the server serves)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.main import app


@app.command("index")
def index(
    collection: str = typer.Option(..., "--collection", "-c", help="Collection name (created if missing)."),
    input: Path = typer.Option(
        ...,
        "--input",
        "-i",
        exists=True,
        dir_okay=False,
        help="JSONL (BEIR corpus.jsonl works as is), CSV/TSV or Parquet file.",
    ),
    id_field: str = typer.Option(None, help="Id field (default: `_id`, else `id`)."),
    text_field: str = typer.Option("text", help="Text field."),
    title_field: str = typer.Option(
        "title", help="Optional title field prepended to the text ('' for none)."
    ),
    model: str = typer.Option(None, help="Embedding model (default RRS_EMBED_MODEL)."),
    index_kind: str = typer.Option("auto", "--index", help="auto | flat | hnsw | ivf_flat | ivf_pq"),
    metric: str = typer.Option("cosine", help="cosine | ip | l2"),
    data_dir: Path = typer.Option(None, help="Data directory (default RRS_DATA_DIR, as the server)."),
    device: str = typer.Option("auto", help="Embedding device."),
    attention_temperature: float = typer.Option(
        None, min=0.01, help="TempScale attention temperature (default RRS_EMBED_ATTENTION_TEMPERATURE, 1)."),
    batch_size: int = typer.Option(64, min=1, help="Texts per embedding forward pass."),
    chunk_size: int = typer.Option(1024, min=1, help="Records read, embedded and committed at a time."),
    limit: int = typer.Option(None, min=1, help="Stop after this many input records."),
    chunk_tokens: int = typer.Option(
        None, min=0, help="New collection: embed documents longer than this many tokens as overlapping chunks "
        "(default: the model's window; 0: no chunking, text past the window is not embedded)."),
    chunk_overlap: int = typer.Option(None, min=0, help="Tokens consecutive chunks share (default chunk_tokens/8)."),
    lexical_stemmer: str = typer.Option(
        None, help="New collection: stemming of its lexical index, none (language-neutral, the default) or "
        "porter (English)."),
    metadata_index: list[str] = typer.Option(
        None, "--metadata-index", help="Metadata field to index for filters (repeat for several; nested: a.b); "
        "built after the records are written, kept if it exists."),
    prune: bool = typer.Option(
        False, "--prune", help="After the whole file is read, delete stored documents whose id it does not hold "
        "(a full sync; without it a sync never deletes)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Embed and index a corpus file; rerun to resume or to sync an edited file (unchanged texts are skipped)."""
    from indexing.batch import index_file
    from indexing.errors import IndexingError
    from models.embedder import load_embedder
    from models.embedder.tempscale import space_id
    from service.settings import Settings

    settings = Settings()
    temperature = settings.embed_attention_temperature if attention_temperature is None else attention_temperature
    encoder = load_embedder(model or settings.embed_model, device=device, attention_temperature=temperature)
    model_name = space_id(model or settings.embed_model, temperature)
    try:
        report = index_file(
            data_dir or settings.data_dir,
            collection,
            input,
            encoder,
            id_field=id_field,
            text_field=text_field,
            title_field=title_field or None,
            index_kind=index_kind,
            metric=metric,
            model_name=model_name,
            batch_size=batch_size,
            chunk_size=chunk_size,
            progress=progress,
            limit=limit,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            max_chunks=settings.max_chunks_per_document,
            lexical_stemmer=lexical_stemmer,
            metadata_indexes=metadata_index or (),
            prune=prune,
        )
    except IndexingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{report.collection}: read {report.read}, indexed {report.indexed} ({report.updated} of them changed "
        f"texts), metadata updated {report.metadata_updated}, skipped {report.skipped} (unchanged) "
        f"in {report.seconds:.1f}s ({report.docs_per_s:.1f} docs/s); collection holds "
        f"{report.count} documents, index {report.built_kind}"
        + (f"; {report.chunked} long documents were split, {report.vectors} vectors written" if report.chunked else "")
        + (f"; deleted {report.deleted} not in the file" if prune else "")
        + (f"; metadata indexes built: {', '.join(report.metadata_indexes_built)}"
           if report.metadata_indexes_built else "")
        + f". A running server picks it up with "
        f"POST /v1/collections/{report.collection}/reload"
    )
    if report.truncated:
        typer.echo(
            f"note: {report.truncated} documents are longer than the model reads ({encoder.max_seq_length} "
            "tokens, or past RRS_MAX_CHUNKS_PER_DOCUMENT chunks): they are stored whole but found by their start "
            "only; a collection with chunking (the default for new ones) indexes all of it",
            err=True,
        )
