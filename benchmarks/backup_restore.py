"""Backing up a serving collection and restoring it, at 200k documents.

`python -m benchmarks.backup_restore` fills a collection through `Collection.upsert` (the documents
of `benchmarks.filtered_search`), then measures: upsert throughput of a writer thread with no
backup running (the baseline, same run), the same writer while backups are taken back to back
(writes go on during a backup: how much do they slow down?), the time and size of one backup, and
the time of a restore (checksums, copy, index rebuilt from the stored vectors), split into the
file work and the rebuild, and the restored document count against the backup's (tests check that
restores answer like the original; here the original keeps taking writes after the copy).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.filtered_search import DIM, _documents, _fill
from benchmarks.reporting import save_figure, write_results
from indexing.backup import backup_folder, fill_from_backup, read_backup
from indexing.collection import CollectionCatalog, CollectionConfig


def _writer_rate(coll: Any, seconds: float, start_id: int, during: threading.Event | None = None) -> float:
    """Documents/s a writer upserting batches of 500 reaches in `seconds` (or while `during` is unset)."""
    rng = np.random.default_rng(start_id)
    centroids = rng.standard_normal((64, DIM)).astype(np.float32)
    written, t0, next_id = 0, time.perf_counter(), start_id
    while (time.perf_counter() - t0 < seconds) if during is None else not during.is_set():
        docs, x = _documents(500, next_id, rng, centroids)
        coll.upsert(docs, x)
        written += 500
        next_id += 500
    return written / (time.perf_counter() - t0)


def run(n_docs: int = 200_000, writer_s: float = 20.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = CollectionCatalog(root / "data", snapshot_every=10**9)
        coll = catalog.create(CollectionConfig("live", "synthetic", DIM))
        print(f"filling {n_docs} documents ...", flush=True)
        _fill(coll, n_docs, seed=0)
        if coll.index.needs_rebuild(coll.config.index_kind):
            coll.rebuild()
        quiet = _writer_rate(coll, writer_s, 10_000_000)
        print(f"writer alone: {quiet:.0f} docs/s", flush=True)

        done = threading.Event()
        backups: list[tuple[float, dict[str, Any]]] = []

        def back_up() -> None:
            while len(backups) < 3:
                t = time.perf_counter()
                info = backup_folder(coll.folder, "live", root / "backups")
                backups.append((time.perf_counter() - t, info))
            done.set()

        thread = threading.Thread(target=back_up)
        thread.start()
        busy = _writer_rate(coll, 0, 20_000_000, during=done)
        thread.join()
        print(f"writer during backups: {busy:.0f} docs/s", flush=True)

        seconds, info = backups[-1]
        path = root / "backups" / info["id"]
        t = time.perf_counter()
        checked = read_backup(path)
        files_s = time.perf_counter() - t
        t = time.perf_counter()
        restored = catalog.adopt("restored", lambda target: fill_from_backup(checked, path, target, "restored"))
        restore_s = time.perf_counter() - t
        result = {
            "documents_at_backup": info["documents"], "backup_bytes": info["bytes"], "backup_s": seconds,
            "backup_s_all": [b[0] for b in backups], "writer_quiet_docs_per_s": quiet,
            "writer_during_backup_docs_per_s": busy, "during_vs_quiet": busy / quiet,
            "restore_check_s": files_s, "restore_s": restore_s, "restored_count": restored.store.count(),
            "restored_kind": restored.index.kind,
            "baseline": "the same writer thread with no backup running, same run",
        }
        catalog.close()
    return result


def to_markdown(r: dict) -> str:
    return "\n".join([
        f"Baseline: {r['baseline']}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| documents in the backup (a whole number of writer batches) | {r['documents_at_backup']:,} |",
        f"| backup size | {r['backup_bytes'] / 2**20:,.0f} MiB |",
        f"| one backup, while the writer runs | {r['backup_s']:.1f} s |",
        f"| writer alone | {r['writer_quiet_docs_per_s']:,.0f} docs/s |",
        f"| writer during back-to-back backups | {r['writer_during_backup_docs_per_s']:,.0f} docs/s "
        f"(**{r['during_vs_quiet']:.2f}x**) |",
        f"| restore: checksums of the backup | {r['restore_check_s']:.1f} s |",
        f"| restore: copy, open, {r['restored_kind']} index rebuilt from stored vectors | {r['restore_s']:.1f} s |",
        f"| restored documents | {r['restored_count']:,} |",
    ])


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    labels = ["writer alone", "writer during backups"]
    values = [r["writer_quiet_docs_per_s"], r["writer_during_backup_docs_per_s"]]
    bars = ax.barh(labels[::-1], values[::-1], color=["tab:orange", "tab:blue"])
    for bar, v in zip(bars, values[::-1], strict=True):
        ax.annotate(f" {v / values[0]:.2f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
    ax.set_xlabel("upserts, documents / s")
    ax.set_xlim(right=max(values) * 1.3)
    save_figure(fig, path, f"Writes during backups of {r['documents_at_backup']:,} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backup_restore.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/backup_restore.png"))
    args = parser.parse_args()
    write_results(run(args.documents), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
