"""Backups of a collection, taken while it serves, and restores into a new collection.

A backup is a folder `<backups>/<collection>/<stamp>/` holding a consistent copy of the document
store (SQLite's online backup, from its own read connection: the copy is one read transaction of the
WAL, so writes go on meanwhile and none is half in it), the relevance-feedback log when there is
one, and `backup.json`: the collection's configuration, what the copy holds, the manifest's fields
that are not index data (the relevance calibration), and the SHA-256 of each file. `backup.json` is
written last and the folder renamed into place, so a folder with one is complete.

The ANN index snapshot the collection last wrote is kept too (hard-linked when the backup folder is
on the same filesystem: a snapshot file is never rewritten, each has a name of its own). It is captured before the
store is copied, so the copy holds every write the snapshot does, and a restore opens the collection
the way a restart does: the snapshot loaded, the store's later writes replayed onto it. Without a
snapshot (`include_index=False`, or a backup of an older format) the restore rebuilds the index from
the stored vectors instead (no re-embedding, but an HNSW index of 200k vectors takes a minute).
Metadata indexes and the lexical index live inside the store and come back with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexing.collection import COLLECTION_NAME, STORE_FILE
from indexing.errors import IndexingError, InvalidDocument
from indexing.feedback import FEEDBACK_FILE
from indexing.snapshot import MANIFEST, SnapshotError, atomic_write, fsync_dir, read_manifest
from indexing.store import DocumentStore

BACKUP_FILE = "backup.json"
FORMAT = 1
STAMP = re.compile(r"^\d{8}T\d{6}Z-\d{6}$")
# Manifest fields describing the index snapshot; every other field (the calibration) is kept.
_SNAPSHOT_KEYS = {"name", "model", "dim", "metric", "index_kind", "built_kind", "count", "seq", "written_at",
                  "format", "index_file", "sha256", "bytes"}


class BackupError(IndexingError):
    """A backup is missing, incomplete or does not match its checksums."""


def backup_folder(folder: Path, name: str, backups: Path, include_index: bool = True) -> dict[str, Any]:
    """Back up the collection stored in `folder` (served or not) under `backups`; returns its description."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.time_ns() // 1000 % 1_000_000:06d}"
    final = Path(backups) / name / stamp
    partial = final.with_name(f".{stamp}.partial")
    partial.mkdir(parents=True)
    try:
        index = _capture_snapshot(folder, partial) if include_index else None  # before the store: see above
        _copy_sqlite(folder / STORE_FILE, partial / STORE_FILE)
        if (folder / FEEDBACK_FILE).exists():
            _copy_sqlite(folder / FEEDBACK_FILE, partial / FEEDBACK_FILE)
        store = DocumentStore(partial / STORE_FILE)  # describes what the copy holds, not the live store
        try:
            config, count, seq = json.loads(store.get_meta("config") or "null"), store.count(), store.last_seq
            metadata_indexes = store.metadata_indexes()
        finally:
            store.close()  # the last connection: SQLite folds its WAL back into the file
        if config is None:
            raise BackupError(f"backup: {folder / STORE_FILE} holds no collection configuration")
        manifest = read_manifest(folder) or {}
        info = {
            "format": FORMAT,
            "id": f"{name}/{stamp}",
            "collection": name,
            "created_at": time.time(),
            "config": config,
            "documents": count,
            "store_seq": seq,
            "metadata_indexes": metadata_indexes,
            "manifest": {k: v for k, v in manifest.items() if k not in _SNAPSHOT_KEYS},
            "index": index,
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                      for p in (partial / STORE_FILE, partial / FEEDBACK_FILE) if p.exists()},
        }
        if index is not None:  # the manifest's own checksum of the snapshot: no second read of the file
            info["files"][index["index_file"]] = {"bytes": index["bytes"], "sha256": index["sha256"]}
        atomic_write(partial / BACKUP_FILE, json.dumps(info, indent=1).encode())
        os.rename(partial, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return describe(info)


def describe(info: dict[str, Any]) -> dict[str, Any]:
    """The public view of a backup: no file list, one size."""
    return {
        "id": info["id"],
        "collection": info["collection"],
        "created_at": info["created_at"],
        "documents": info["documents"],
        "bytes": sum(f["bytes"] for f in info["files"].values()),
        "calibrated": bool(info["manifest"].get("calibration")),
        "metadata_indexes": info.get("metadata_indexes", []),
        "index": None if not info.get("index") else info["index"]["built_kind"],
    }


def backup_path(backups: Path, backup_id: str) -> Path:
    """The folder of backup `<collection>/<stamp>`; a malformed id is refused before any path is built."""
    parts = backup_id.split("/")
    if len(parts) != 2 or not COLLECTION_NAME.match(parts[0]) or not STAMP.match(parts[1]):
        raise InvalidDocument(f"backup: {backup_id!r} is not a backup id (<collection>/<YYYYMMDDTHHMMSSZ-micros>)")
    return Path(backups) / parts[0] / parts[1]


def read_backup(path: Path) -> dict[str, Any]:
    """The backup's `backup.json`, after checking every file against its checksum."""
    path = Path(path)
    try:
        info = json.loads((path / BACKUP_FILE).read_text())
    except FileNotFoundError:
        raise BackupError(f"backup: {path} does not exist or is incomplete (no {BACKUP_FILE})") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"backup: {path / BACKUP_FILE} is unreadable ({exc})") from None
    if info.get("format") != FORMAT or STORE_FILE not in info.get("files", {}):
        raise BackupError(f"backup: {path / BACKUP_FILE} is not a backup of format {FORMAT}")
    for file_name, want in info["files"].items():
        p = path / file_name
        if not p.exists() or p.stat().st_size != want["bytes"] or _sha256(p) != want["sha256"]:
            raise BackupError(f"backup: {p} does not match its checksum; the backup is damaged")
    return info


def list_backups(backups: Path) -> list[dict[str, Any]]:
    """Every complete backup under `backups`, oldest first (a damaged `backup.json` is skipped)."""
    out = []
    for meta in sorted(Path(backups).glob(f"*/*/{BACKUP_FILE}")):
        if not STAMP.match(meta.parent.name):  # a backup still being written (".<stamp>.partial")
            continue
        try:
            out.append(describe(json.loads(meta.read_text())))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(out, key=lambda b: (b["created_at"], b["id"]))


def fill_from_backup(info: dict[str, Any], source: Path, target: Path, name: str) -> bool:
    """Copy a checked backup into the empty folder `target` as collection `name`, with a manifest of
    the kept fields (and of the index snapshot, when the backup has one). Returns whether it has one:
    if not, the collection must be opened with its index rebuilt from the store."""
    index = info.get("index")
    for file_name in info["files"]:
        if index and file_name == index["index_file"]:
            _link_or_copy(source / file_name, target / file_name)  # snapshots are never written in place
        else:
            shutil.copyfile(source / file_name, target / file_name)
    if info["config"].get("name") != name:
        store = DocumentStore(target / STORE_FILE)
        try:
            store.set_meta("config", json.dumps({**info["config"], "name": name}))
        finally:
            store.close()
    manifest = {**info["manifest"], **({**index, "name": name} if index else {})}
    if manifest:
        atomic_write(target / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return bool(index)


def archive(path: Path, root_name: str, block: int = 1 << 20) -> tuple[int, Iterator[bytes]]:
    """A complete backup folder as an uncompressed tar stream (files under `root_name/`): its exact
    length, and the bytes, read from disk as they are sent (no temporary archive)."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith("."))
    if not (Path(path) / BACKUP_FILE).exists():
        raise BackupError(f"backup: {path} is incomplete (no {BACKUP_FILE})")
    sizes = {p: p.stat().st_size for p in files}  # files of a complete backup never change
    length = sum(512 + -(-n // 512) * 512 for n in sizes.values()) + 1024

    def stream() -> Iterator[bytes]:
        for p, size in sizes.items():
            info = tarfile.TarInfo(f"{root_name}/{p.name}")
            info.size, info.mtime, info.mode = size, int(p.stat().st_mtime), 0o644
            yield info.tobuf(format=tarfile.USTAR_FORMAT)
            with open(p, "rb") as fh:
                sent = 0
                while sent < size:
                    data = fh.read(min(block, size - sent))
                    if not data:
                        raise BackupError(f"backup: {p} shrank while it was being sent")
                    sent += len(data)
                    yield data
            if size % 512:
                yield b"\0" * (512 - size % 512)
        yield b"\0" * 1024  # two empty blocks end a tar archive

    return length, stream()


def _capture_snapshot(folder: Path, partial: Path, attempts: int = 5) -> dict[str, Any] | None:
    """Link (or copy) the collection's current index snapshot into `partial`; its manifest fields.

    A snapshot written meanwhile deletes the one just named: then the manifest is read again. A file
    that was linked is the one the manifest describes, as snapshot names are never reused (restores
    check it against the manifest's checksum). None when the collection has no readable snapshot
    (the restore rebuilds instead).
    """
    for _ in range(attempts):
        try:
            manifest = read_manifest(folder)
        except SnapshotError:
            return None
        if not manifest or not manifest.get("index_file"):
            return None
        source, captured = folder / str(manifest["index_file"]), partial / str(manifest["index_file"])
        try:
            _link_or_copy(source, captured)
        except FileNotFoundError:
            continue
        return {k: v for k, v in manifest.items() if k in _SNAPSHOT_KEYS}  # names are never reused
    return None


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link, or a copy on another filesystem (an open file survives its unlinking)."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(source, target)


def _copy_sqlite(src: Path, dst: Path) -> None:
    source = sqlite3.connect(Path(src).resolve().as_uri() + "?mode=ro", uri=True)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)  # all pages in one step: one consistent read of the source
    finally:
        target.close()
        source.close()
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
