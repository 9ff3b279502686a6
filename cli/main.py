"""The `rrs` command line: one typer app, one module per subcommand."""

from __future__ import annotations

import typer

app = typer.Typer(help="rrs: retrieve, rerank, serve.", no_args_is_help=True, add_completion=False)


def _register() -> None:
    # Subcommand modules attach themselves to `app`; imported here so `rrs --help` lists them all.
    from cli import (  # noqa: F401
        backup,
        bench,
        bench_attention,
        bench_embed,
        bench_rerank,
        bench_search,
        calibrate,
        eval,
        index,
        serve,
    )


_register()

if __name__ == "__main__":
    app()
