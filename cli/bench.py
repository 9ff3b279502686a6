"""`rrs bench <what>`: each benchmark registers its own command on `bench_app`."""

from __future__ import annotations

import typer

from cli.main import app

bench_app = typer.Typer(help="Benchmarks: each prints a table against a baseline measured in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
