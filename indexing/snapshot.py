"""Atomic, checksummed index snapshots and the manifest that describes them.

A snapshot is one `.npz` file (the serialised FAISS index plus its slot table and live mask) named
after the store sequence it covers and the time it was written, and `manifest.json` points at it. A
name is never reused, so a file is never replaced under the name a manifest gives it: whoever
holds a manifest (a backup linking the file) holds exactly the bytes it describes. Both are written to a temp
file, fsynced, renamed into place, and the directory is fsynced: a crash leaves either the old
snapshot or the new one, never half of one. The manifest is the last thing written, so it never
points at a file that is not complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class SnapshotError(Exception):
    """The snapshot on disk cannot be used (missing file, bad checksum, unreadable, mismatched)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: unreadable manifest ({exc})") from exc


def write_snapshot(folder: Path, arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the index arrays and then the manifest (which gains file, sha256 and format fields).

    Keys of an existing manifest that this writer does not set (such as `calibration`, filled by
    the calibration stage) are carried over unchanged.
    """
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    name = f"index-{int(manifest['seq']):012d}-{time.time_ns()}.npz"  # unique: a rebuild at the same seq too
    atomic_write(folder / name, data)
    try:
        previous = read_manifest(folder) or {}
    except SnapshotError:
        previous = {}
    merged = {
        "calibration": None,
        **previous,
        **manifest,
        "format": FORMAT_VERSION,
        "index_file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    atomic_write(folder / MANIFEST, json.dumps(merged, indent=2, sort_keys=True).encode())
    for old in folder.glob("index-*.npz"):  # older snapshots are unreachable once the manifest moved on
        if old.name != name:
            old.unlink(missing_ok=True)
    return merged


def update_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Change manifest fields in place (atomically), e.g. `calibration=...`; needs a manifest."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise SnapshotError(f"{folder / MANIFEST}: no manifest yet (write a snapshot first)")
    manifest.update(fields)
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def read_snapshot(folder: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Load and verify the snapshot the manifest points at."""
    path = folder / str(manifest.get("index_file", ""))
    if not manifest.get("index_file") or not path.exists():
        raise SnapshotError(f"{path}: index file named by the manifest is missing")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.get("sha256"):
        raise SnapshotError(f"{path}: checksum mismatch (file is corrupt or was replaced)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: unreadable index file ({exc})") from exc
