"""`rrs serve`: start the HTTP server. Every flag maps to a Settings field (env `RRS_*`)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cli.main import app


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (RRS_HOST)."),
    port: int = typer.Option(None, help="Port (RRS_PORT)."),
    embed_model: str = typer.Option(None, help="Embedding model name or path (RRS_EMBED_MODEL)."),
    embed_attention_temperature: float = typer.Option(
        None, help="TempScale attention temperature of the embedder (RRS_EMBED_ATTENTION_TEMPERATURE)."),
    embed_runtime: str = typer.Option(None, help="Embedder runtime: auto, torch or onnx (RRS_EMBED_RUNTIME)."),
    embed_onnx_max_tokens: int = typer.Option(
        None, help="Largest batch (padded tokens) run on ONNX Runtime; default measured (RRS_EMBED_ONNX_MAX_TOKENS)."),
    rerank_model: str = typer.Option(None, help="Reranker LLM name, path or GGUF (RRS_RERANK_MODEL)."),
    data_dir: Path = typer.Option(None, help="Where collections live (RRS_DATA_DIR)."),
    max_batch_tokens: int = typer.Option(None, help="Token budget per batch (RRS_MAX_BATCH_TOKENS)."),
    max_padding_ratio: float = typer.Option(None, help="Padding cap per batch (RRS_MAX_PADDING_RATIO)."),
    request_timeout_s: float = typer.Option(None, help="Per-request deadline (RRS_REQUEST_TIMEOUT_S)."),
    demo_collection: bool = typer.Option(None, "--demo-collection/--no-demo-collection",
                                         help="Index the demo corpus at start (RRS_DEMO_COLLECTION)."),
    log_level: str = typer.Option(None, help="Log level (RRS_LOG_LEVEL)."),
) -> None:
    """Serve embed, search and rerank over HTTP."""
    from service.app import create_app
    from service.settings import Settings
    from service.shutdown import serve as serve_until_signalled

    overrides = {k: v for k, v in locals().items() if v is not None}
    for imported in ("create_app", "Settings", "serve_until_signalled"):
        overrides.pop(imported, None)
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise typer.Exit(serve_until_signalled(create_app(settings), settings))  # SIGTERM: drain, flush, exit 0
