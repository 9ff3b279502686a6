"""How the retrieval benchmarks save what they measured: JSON results, a markdown table, a PNG."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def write_results(results: dict, out: Path, plot_path: Path, table: Callable[[dict], str],
                  plot: Callable[[dict, Path], None]) -> None:
    """Results as JSON, the table on stdout, the figure as PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    plot(results, plot_path)
    print(f"wrote {out} and {plot_path}")
