"""How the retrieval benchmarks save what they measured: JSON results, a markdown table, a PNG."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def format_gain(gain: dict[str, Any] | None, key: str = "ndcg") -> str:
    """`+0.041 [+0.010, +0.076]`: a paired difference with its interval, or "baseline" for None."""
    if gain is None:
        return "baseline"
    lo, hi = gain["interval90"]
    return f"{gain[key]:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def save_figure(fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def grouped_barh(ax: Any, labels: list[str], series: list[tuple[list[float], str, str]], notes: list[str],
                 xlabel: str, room: float) -> None:
    """Horizontal bars, one group per label (top to bottom as given), one bar per series (values,
    legend label, colour), with `notes` beside the last series' bars; log x axis, widened by `room`
    so the notes and the legend fit."""
    import numpy as np

    y = np.arange(len(labels))[::-1]
    height = 0.8 / len(series)
    for i, (values, label, color) in enumerate(series):
        bars = ax.barh(y + 0.4 - height * (i + 0.5), values, height, label=label, color=color)
    for bar, note in zip(bars, notes, strict=True):
        ax.annotate(f" {note}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center", fontsize=7)
    ax.set_yticks(y, [label.replace("$", r"\$") for label in labels], fontsize=8)  # no mathtext
    ax.set_xscale("log")
    ax.set_xlim(right=max(max(values) for values, _, _ in series) * room)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, loc="lower right")


def write_results(results: dict, out: Path, plot_path: Path, table: Callable[[dict], str],
                  plot: Callable[[dict, Path], None]) -> None:
    """Results as JSON, the table on stdout, the figure as PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    plot(results, plot_path)
    print(f"wrote {out} and {plot_path}")


def run_on_dataset_and_demo(doc: str, name: str, run: Callable[[dict[str, Path], argparse.Namespace], dict],
                            table: Callable[[dict], str], plot: Callable[[dict, Path], None],
                            options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The main of a benchmark scored on `--dataset` and on the shipped demo corpus (as a BEIR folder):
    `--model`, results in benchmarks/results/<name>.json, its plot in docs/img/<name>.png."""
    from benchmarks.hybrid import demo_as_beir
    from benchmarks.long_documents import DEFAULT_DATASET, DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{name}.json"))
    parser.add_argument("--plot", type=Path, default=Path(f"docs/img/{name}.png"))
    if options is not None:
        options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {args.dataset.name: args.dataset, "demo": demo_as_beir(Path(tmp) / "demo")}
        results = run(datasets, args)
    write_results(results, args.out, args.plot, table, plot)
