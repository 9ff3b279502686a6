"""The load-test report: one markdown table per scenario and a saturation-curve PNG per scenario."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

if TYPE_CHECKING:
    from loadtest.runner import StepResult

P99_TARGET_MS = 100.0


def sustained(steps: Sequence[StepResult], p99_target_ms: float | None) -> StepResult | None:
    """The highest-throughput step with no shed and no failed request (and p99 under the target)."""
    clean = [s for s in steps if s.errors == 0 and s.shed == 0 and s.admitted > 0
             and (p99_target_ms is None or s.p99_ms < p99_target_ms)]
    return max(clean, key=lambda s: s.rps, default=None)


def plot_saturation(scenario: str, steps: Sequence[StepResult], path: Path, max_inflight: int) -> None:
    """Throughput (admitted and shed) and admitted-latency percentiles against concurrent users."""
    curve = _curve(steps)
    users = [s.users for s in curve]
    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_rps.plot(users, [s.rps for s in curve], "o-", label="admitted (2xx) req/s")
    ax_rps.plot(users, [s.shed_rps for s in curve], "s--", color="tab:red", label="shed (503) req/s")
    ax_rps.set_xlabel("concurrent users (closed loop)")
    ax_rps.set_ylabel("requests / s")
    ax_rps.axvline(max_inflight, color="grey", lw=0.8, ls=":", label=f"in-flight cap ({max_inflight})")
    ax_rps.legend(fontsize=8)
    for q, style in (("p50_ms", "o-"), ("p95_ms", "^-"), ("p99_ms", "s-")):
        ax_lat.plot(users, [getattr(s, q) for s in curve], style, label=q.replace("_ms", ""))
    if scenario.startswith("search") or scenario == "mixed":
        ax_lat.axhline(P99_TARGET_MS, color="grey", lw=0.8, ls=":", label="100 ms")
    ax_lat.set_xlabel("concurrent users (closed loop)")
    ax_lat.set_ylabel("latency of admitted requests (ms)")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend(fontsize=8)
    for ax in (ax_rps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(users, [str(u) for u in users])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
    fig.suptitle(f"rrs load test: {scenario}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve(steps: Sequence[StepResult]) -> list[StepResult]:
    """The rising steps only (a trailing recovery step at lower load is reported, not plotted)."""
    curve: list[StepResult] = []
    for s in steps:
        if curve and s.users <= curve[-1].users:
            break
        curve.append(s)
    return curve


def write_report(out: Path, meta: dict[str, Any], results: Sequence[StepResult], img_dir: Path | None) -> str:
    load = tuple(round(x, 1) for x in meta["load_average_at_end"])
    lines = [f"# rrs load test {meta['date']}", "",
             f"Machine: {meta['machine']}; load average at the end {load}."
             f" Server: RRS_MAX_INFLIGHT_REQUESTS={meta['max_inflight']},"
             f" RRS_TORCH_THREADS={meta['torch_threads']}, started in {meta['server_startup_s']} s,"
             f" peak RSS {meta['server_peak_rss_mb']} MB. Steps of {meta['step_seconds']} s, the first"
             f" {meta['warmup_excluded_s']} s of each excluded. Corpus: {meta['corpus']}.", ""]
    for scenario in dict.fromkeys(r.scenario for r in results):
        steps = [r for r in results if r.scenario == scenario]
        target = P99_TARGET_MS if scenario.startswith("search") or scenario == "mixed" else None
        best = sustained(steps, target)
        lines += [f"## {scenario}", "",
                  "| users | admitted req/s | p50 ms | p95 ms | p99 ms | max ms | shed (503) | errors | RSS MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in steps:
            lines.append(f"| {s.users} | {s.rps:.1f} | {s.p50_ms:.1f} | {s.p95_ms:.1f} | {s.p99_ms:.1f} | "
                         f"{s.max_ms:.0f} | {s.shed} | {s.errors} | {s.rss_mb:.0f} |")
        lines.append("")
        if any(st.endpoints for st in steps):
            lines += ["Per endpoint:", "",
                      "| users | endpoint | admitted req/s | p50 ms | p95 ms | p99 ms | shed | errors |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|"]
            for st in steps:
                for name, e in st.endpoints.items():
                    lines.append(f"| {st.users} | {name} | {e['rps']:.1f} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | "
                                 f"{e['p99_ms']:.1f} | {e['shed']:.0f} | {e['errors']:.0f} |")
            lines.append("")
        if best is not None:
            cond = f"p99 under {target:.0f} ms and " if target else ""
            lines.append(f"Sustained ({cond}no shed or failed request): **{best.rps:.1f} req/s** at {best.users} "
                         f"users, p99 {best.p99_ms:.1f} ms.")
        base = meta.get("inprocess_embed_baseline") or {}
        if scenario == "embed" and base:
            peak = max(steps, key=lambda s: s.rps)
            lines.append(f"Peak {peak.rps:.1f} req/s (one passage each) at {peak.users} users = "
                         f"{peak.rps / base['batch1_texts_per_s']:.2f}x the model called in-process one text per "
                         f"call ({base['batch1_texts_per_s']} texts/s) and "
                         f"{peak.rps / base['batch32_texts_per_s']:.2f}x in-process batches of 32 "
                         f"({base['batch32_texts_per_s']} texts/s), same run, same thread count.")
        errors = [e for s in steps for e in s.error_samples]
        if errors:
            lines.append(f"Errors: {'; '.join(errors)}")
        png = f"loadtest_{scenario}.png"
        plot_saturation(scenario, steps, out / png, meta["max_inflight"])
        if img_dir is not None:
            img_dir.mkdir(parents=True, exist_ok=True)
            plot_saturation(scenario, steps, img_dir / png, meta["max_inflight"])
        lines += ["", f"![{scenario} saturation]({png})", ""]
    for scenario, why in meta["skipped"].items():
        lines += [f"## {scenario}", "", f"Skipped: {why}.", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    """Re-render a finished run's report and PNGs from its summary.json (no load generated)."""
    from loadtest.runner import StepResult

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--img-dir", type=Path, default=None)
    args = ap.parse_args()
    summary = json.loads((args.folder / "summary.json").read_text())
    print(write_report(args.folder, summary["meta"], [StepResult(**s) for s in summary["steps"]], args.img_dir))


if __name__ == "__main__":
    main()
