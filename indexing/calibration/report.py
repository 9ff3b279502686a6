"""The calibration report: a table (markdown + JSON) and two plots, for the calibrator and baselines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.calibration.evaluation import MethodReport
from indexing.calibration.metrics import (
    ECE_BINS,
    GAIN_METRICS,
    GainInterval,
    gain_interval,
    precision_recall_curve,
    reliability_curve,
)

LABELS = {
    "top_k": "fixed top-k",
    "cosine_cutoff": "global cosine cutoff",
    "platt": "global Platt scaling",
    "adapter": "query-dependent calibrator",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(reports: Sequence[MethodReport]) -> str:
    head = (
        "| method | P@R0.5 | P@R0.8 | P@R0.9 | ROC-AUC | ECE | Brier | threshold | P | R | F1 | mean list | Null% |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in reports:
        m = r.metrics
        rows.append(
            f"| {LABELS.get(r.name, r.name)} | {_fmt(m.precision_at_recall_50)} | {_fmt(m.precision_at_recall_80)} "
            f"| {_fmt(m.precision_at_recall_90)} "
            f"| {_fmt(m.roc_auc)} | {_fmt(m.ece)} | {_fmt(m.brier)} | {_fmt(m.threshold)} | {_fmt(m.precision)} "
            f"| {_fmt(m.recall)} | {_fmt(m.f1)} | {m.mean_list_length:.1f} | {100 * m.null_fraction:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def gains(
    reports: Sequence[MethodReport], labels: Sequence[np.ndarray], method: str = "adapter", n_resamples: int = 1000
) -> dict[str, list[GainInterval]]:
    """Baseline name -> the gain of `method` over it on each of GAIN_METRICS, with query-bootstrap intervals."""
    chosen = next((r for r in reports if r.name == method), None)
    if chosen is None:
        return {}
    return {
        r.name: [gain_interval(chosen.predictions, r.predictions, labels, m, n_resamples) for m in GAIN_METRICS]
        for r in reports
        if not r.name.startswith(method)  # the method itself and its variants are not baselines
    }


def gains_table(table: dict[str, list[GainInterval]], method: str = "adapter") -> str:
    """Markdown: the gain over each baseline and its interval (empty without the method)."""
    if not table:
        return ""
    first = next(iter(table.values()))
    level = f"{100 * first[0].level:.0f}%"
    head = "| " + LABELS.get(method, method) + " vs | " + " | ".join(
        f"gain in {g.metric} | {level} interval" for g in first
    ) + " |\n|---|" + "---|---|" * len(first) + "\n"
    rows = [
        f"| {LABELS.get(name, name)} | "
        + " | ".join(f"{g.gain:+.3f} | [{g.low:+.3f}, {g.high:+.3f}]" for g in row)
        + " |"
        for name, row in table.items()
    ]
    note = (
        f"\nIntervals: paired bootstrap over the {first[0].n_queries} queries ({first[0].n_resamples} resamples) "
        "of the held-out scores: how much the choice of labelled queries moves the gain.\n"
    )
    return head + "\n".join(rows) + "\n" + note


def report_dict(
    reports: Sequence[MethodReport], context: dict[str, Any], gain_rows: dict[str, list[GainInterval]] | None = None
) -> dict[str, Any]:
    return {
        **context,
        "gains": {name: [g.as_dict() for g in row] for name, row in (gain_rows or {}).items()},
        "ece_binning": f"{ECE_BINS} equal-width bins on [0, 1], weighted by pair count",
        "methods": {
            r.name: {"label": LABELS.get(r.name, r.name), **r.metrics.as_dict(), "chosen_per_fold": r.chosen}
            for r in reports
        },
    }


def plot_reliability(reports: Sequence[MethodReport], labels: Sequence[np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.concatenate(labels)
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for r in reports:
        if not r.is_probability:
            continue
        mean_pred, observed, _ = reliability_curve(np.concatenate(r.predictions), y)
        ax.plot(mean_pred, observed, marker="o", ms=3, label=f"{LABELS.get(r.name, r.name)} (ECE {r.metrics.ece:.3f})")
    ax.set_xlabel("predicted relevance")
    ax.set_ylabel("observed share relevant")
    ax.set_title(f"Reliability (held-out queries, {ECE_BINS} bins)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_precision_recall(reports: Sequence[MethodReport], labels: Sequence[np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.concatenate(labels)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    for r in reports:
        precision, recall, _ = precision_recall_curve(np.concatenate(r.predictions), y)
        ax.plot(recall, precision, lw=1.4, label=f"{LABELS.get(r.name, r.name)} (AUC {r.metrics.roc_auc:.3f})")
        m = r.metrics
        ax.plot([m.recall], [m.precision], marker="x", color=ax.lines[-1].get_color())
    for level in (0.8, 0.9):
        ax.axvline(level, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("recall (of relevant candidates)")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall of one global threshold (x: chosen threshold)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    reports: Sequence[MethodReport],
    labels: Sequence[np.ndarray],
    out_dir: Path,
    prefix: str,
    context: dict[str, Any],
    gain_rows: dict[str, list[GainInterval]] | None = None,
) -> dict[str, Path]:
    """Write `<prefix>.json`, `<prefix>.md`, `<prefix>_reliability.png`, `<prefix>_pr.png`.

    `gain_rows`: `gains(reports, labels)` when the caller already computed them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{prefix}.json",
        "markdown": out_dir / f"{prefix}.md",
        "reliability": out_dir / f"{prefix}_reliability.png",
        "precision_recall": out_dir / f"{prefix}_pr.png",
    }
    gain_rows = gains(reports, labels) if gain_rows is None else gain_rows
    paths["json"].write_text(json.dumps(report_dict(reports, context, gain_rows), indent=2))
    paths["markdown"].write_text(markdown_table(reports) + "\n" + gains_table(gain_rows))
    plot_reliability(reports, labels, paths["reliability"])
    plot_precision_recall(reports, labels, paths["precision_recall"])
    return paths
