"""Backing up a serving collection and restoring it, at 200k documents.

`python -m benchmarks.backup_restore` fills a collection through `Collection.upsert` (the documents
of `benchmarks.filtered_search`), then measures: upsert throughput of a writer thread with no
backup running (the baseline, same run), the same writer while backups are taken back to back
(writes go on during a backup: how much do they slow down?), and, once the writer has stopped and
an index snapshot was written followed by 5,000 more documents, two backups of the same store: one
keeping the index snapshot (the default) and one without it. Each is restored as a new collection:
the snapshot loaded and the writes after it replayed, against the index rebuilt from the stored
vectors (the baseline for restores, same run), with the restored document counts (tests check that
restores answer like the original).
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
from indexing.catalog import CollectionCatalog
from indexing.collection import CollectionConfig
from indexing.snapshot import read_manifest


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


def _restore(catalog: CollectionCatalog, path: Path, name: str) -> tuple[float, float, Any]:
    """Seconds to check the backup's checksums, seconds for the whole restore, and the collection."""
    t = time.perf_counter()
    checked = read_backup(path)
    check_s = time.perf_counter() - t
    restored = catalog.adopt(name, lambda target: fill_from_backup(checked, path, target, name))
    return check_s, time.perf_counter() - t, restored


def run(n_docs: int = 200_000, writer_s: float = 20.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # No automatic snapshots: one landing inside a timed window (350 MB written by the writer's
        # thread) would dominate it. The rebuild below writes one, and the end of the run another.
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

        coll.snapshot()  # then writes the snapshot lacks, as a server holds between snapshots
        rng = np.random.default_rng(7)
        for b in range(10):
            coll.upsert(*_documents(500, 30_000_000 + 500 * b, rng, rng.standard_normal((64, DIM)).astype(np.float32)))
        pair = {}
        for label, include in (("kept", True), ("bare", False)):
            t = time.perf_counter()
            info = backup_folder(coll.folder, "live", root / "backups", include_index=include)
            pair[label] = (time.perf_counter() - t, info)
        behind = coll.store.count() - read_manifest(coll.folder)["count"]  # the restore replays these
        restores = {}
        for label, (_, info) in pair.items():
            check_s, total_s, restored = _restore(catalog, root / "backups" / info["id"], f"restored-{label}")
            restores[label] = {"check_s": check_s, "total_s": total_s, "count": restored.store.count(),
                               "kind": restored.index.kind, "indexed": len(restored.index)}
            print(f"restore {label}: {total_s:.1f} s", flush=True)
        seconds, info = backups[-1]
        result = {
            "documents_at_backup": info["documents"], "backup_bytes": info["bytes"], "backup_s": seconds,
            "backup_s_all": [b[0] for b in backups], "writer_quiet_docs_per_s": quiet,
            "writer_during_backup_docs_per_s": busy, "during_vs_quiet": busy / quiet,
            "documents": pair["kept"][1]["documents"],
            "kept_backup_s": pair["kept"][0], "kept_bytes": pair["kept"][1]["bytes"],
            "bare_backup_s": pair["bare"][0], "bare_bytes": pair["bare"][1]["bytes"],
            "writes_after_snapshot": behind, "restores": restores,
            "restore_speedup": restores["bare"]["total_s"] / restores["kept"]["total_s"],
            "baseline": "writes: the same writer thread with no backup running; restores: the same store "
                        "restored from a backup without the index snapshot (index rebuilt); same run",
        }
        catalog.close()
    return result


def to_markdown(r: dict) -> str:
    kept, bare = r["restores"]["kept"], r["restores"]["bare"]
    return "\n".join([
        f"Baseline: {r['baseline']}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| documents in the last backup during writes (a whole number of writer batches) | "
        f"{r['documents_at_backup']:,} |",
        f"| its size (store and index snapshot) | {r['backup_bytes'] / 2**20:,.0f} MiB |",
        f"| one backup, while the writer runs | {r['backup_s']:.1f} s |",
        f"| writer alone | {r['writer_quiet_docs_per_s']:,.0f} docs/s |",
        f"| writer during back-to-back backups | {r['writer_during_backup_docs_per_s']:,.0f} docs/s "
        f"(**{r['during_vs_quiet']:.2f}x**) |",
        "",
        f"Then, the writer stopped, two backups of the same {r['documents']:,} documents "
        f"(the index snapshot {r['writes_after_snapshot']:,} documents behind the store):",
        "",
        "| backup | size | backup took | restore: checksums | restore: total | restored documents / indexed |",
        "|---|---:|---:|---:|---:|---:|",
        f"| without the index snapshot: {bare['kind']} rebuilt (baseline) | {r['bare_bytes'] / 2**20:,.0f} MiB | "
        f"{r['bare_backup_s']:.1f} s | {bare['check_s']:.1f} s | {bare['total_s']:.1f} s | "
        f"{bare['count']:,} / {bare['indexed']:,} |",
        f"| with it (default): snapshot loaded, later writes replayed | {r['kept_bytes'] / 2**20:,.0f} MiB | "
        f"{r['kept_backup_s']:.1f} s | {kept['check_s']:.1f} s | {kept['total_s']:.1f} s "
        f"(**{r['restore_speedup']:.1f}x**) | {kept['count']:,} / {kept['indexed']:,} |",
    ])


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (writes, restores) = plt.subplots(1, 2, figsize=(10, 2.6))
    labels = ["writer alone", "writer during backups"]
    values = [r["writer_quiet_docs_per_s"], r["writer_during_backup_docs_per_s"]]
    bars = writes.barh(labels[::-1], values[::-1], color=["tab:orange", "tab:blue"])
    for bar, v in zip(bars, values[::-1], strict=True):
        writes.annotate(f" {v / values[0]:.2f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
    writes.set_xlabel("upserts, documents / s")
    writes.set_xlim(right=max(values) * 1.3)
    seconds = [r["restores"]["bare"]["total_s"], r["restores"]["kept"]["total_s"]]
    bars = restores.barh(["index rebuilt", "snapshot loaded"], seconds, color=["tab:gray", "tab:green"])
    for bar, v in zip(bars, seconds, strict=True):
        restores.annotate(f" {v:.1f} s", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
    restores.set_xlabel("restore, seconds")
    restores.set_xlim(right=max(seconds) * 1.25)
    save_figure(fig, path, f"Backups of {r['documents']:,} documents: writes meanwhile, and restores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backup_restore.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/backup_restore.png"))
    args = parser.parse_args()
    write_results(run(args.documents), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()
