"""The calibration report: a table (markdown + JSON) and two plots, for the calibrator and baselines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.calibration.evaluation import MethodReport
from indexing.calibration.metrics import ECE_BINS, precision_recall_curve, reliability_curve

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


def report_dict(reports: Sequence[MethodReport], context: dict[str, Any]) -> dict[str, Any]:
    return {
        **context,
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
) -> dict[str, Path]:
    """Write `<prefix>.json`, `<prefix>.md`, `<prefix>_reliability.png`, `<prefix>_pr.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{prefix}.json",
        "markdown": out_dir / f"{prefix}.md",
        "reliability": out_dir / f"{prefix}_reliability.png",
        "precision_recall": out_dir / f"{prefix}_pr.png",
    }
    paths["json"].write_text(json.dumps(report_dict(reports, context), indent=2))
    paths["markdown"].write_text(markdown_table(reports))
    plot_reliability(reports, labels, paths["reliability"])
    plot_precision_recall(reports, labels, paths["precision_recall"])
    return paths
