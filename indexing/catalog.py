"""The catalog of collections under `<data_dir>/collections`: opening, creating, adopting (restores),
reloading and deleting them by name or alias, each one's failure kept to itself."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexing.aliases import AliasTable
from indexing.collection import COLLECTION_NAME, STORE_FILE, Collection, CollectionConfig, validate_name
from indexing.errors import CollectionExists, CollectionNotFound, CollectionUnavailable, InvalidDocument
from indexing.snapshot import SnapshotError


@dataclass
class _Slot:
    collection: Collection | None = None
    error: str | None = None


class CollectionCatalog:
    """Every collection under `<data_dir>/collections`; a broken one never blocks the others.

    Every lookup by name also takes an alias (`indexing/aliases.py`) and means its target.
    """

    def __init__(self, data_dir: Path, snapshot_every: int = 1000, device: str = "cpu") -> None:
        self.root = Path(data_dir) / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.snapshot_every = snapshot_every
        self.device = device
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()
        self.aliases = AliasTable(self.root)
        self.on_open: list[Callable[[Collection], None]] = []  # hooks, e.g. attach a calibrator

    def open_all(self) -> dict[str, str | None]:
        """Open every collection on disk; returns name -> error (None when it opened)."""
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and COLLECTION_NAME.match(folder.name):
                self._open(folder.name)
        return {name: slot.error for name, slot in self._slots.items()}

    def _open(self, name: str, rebuild: bool = False) -> _Slot:
        folder = self.root / name
        with self._lock:
            old = self._slots.pop(name, None)
            if old is not None and old.collection is not None:
                old.collection.close(snapshot=False)
            try:
                coll = Collection.open(folder, self.snapshot_every, self.device, rebuild=rebuild)
                for hook in self.on_open:
                    hook(coll)
                slot = _Slot(coll)
            except (SnapshotError, OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                slot = _Slot(None, str(exc))
            self._slots[name] = slot
            return slot

    def create(self, config: CollectionConfig, metadata_indexes: Sequence[str] = ()) -> Collection:
        validate_name(config.name)
        with self._lock:
            folder = self._free_folder(config.name)
            try:
                coll = Collection.create(folder, config, self.snapshot_every, self.device, metadata_indexes)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            for hook in self.on_open:
                hook(coll)
            self._slots[config.name] = _Slot(coll)
            return coll

    def _free_folder(self, name: str) -> Path:
        """The folder of a new collection `name`, refused when a collection or an alias has the name
        (the caller holds the lock)."""
        folder = self.root / name
        if name in self._slots or folder.exists():
            raise CollectionExists(f"name: collection {name!r} already exists")
        if (target := self.aliases.target(name)) is not None:
            raise CollectionExists(f"name: {name!r} is an alias (of {target!r}); choose another name")
        return folder

    def resolve(self, name: str) -> str:
        """The collection `name` means: an alias's target, else the name itself."""
        validate_name(name)
        return self.aliases.target(name) or name

    def adopt(self, name: str, fill: Callable[[Path], bool]) -> Collection:
        """A new collection `name` from files `fill` writes into an empty folder (a restore): the
        folder is renamed into place only once filled, then opened from the index snapshot `fill`
        wrote (it returns whether it wrote one), else with the index rebuilt from the store; a
        snapshot that does not load is rebuilt too. Nothing is left behind when any step fails."""
        validate_name(name)
        with self._lock:
            folder = self._free_folder(name)
            partial = self.root / f".adopt-{name}-{time.time_ns()}"
            partial.mkdir()
            try:
                has_index = fill(partial)
                partial.rename(folder)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            slot = self._open(name, rebuild=not has_index)
            if slot.collection is None and has_index:
                slot = self._open(name, rebuild=True)
            if slot.collection is None:
                self._slots.pop(name, None)
                shutil.rmtree(folder, ignore_errors=True)
                raise CollectionUnavailable(f"collection {name!r} could not be opened: {slot.error}")
            return slot.collection

    def get(self, name: str) -> Collection:
        name = self.resolve(name)
        slot = self._slots.get(name)
        if slot is None:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        if slot.collection is None:
            raise CollectionUnavailable(
                f"collection {name!r} is unavailable: {slot.error}; POST /v1/collections/{name}/reload "
                "with rebuild=true rebuilds its index from the document store"
            )
        return slot.collection

    def reload(self, name: str, rebuild: bool = False) -> Collection:
        """(Re)open a collection from disk, e.g. after `rrs index` wrote it; raises if it stays broken."""
        with self._lock:
            name = self.resolve(name)
            if not (self.root / name / STORE_FILE).exists():
                self._slots.pop(name, None)
                raise CollectionNotFound(f"collection {name!r} does not exist")
            self._open(name, rebuild=rebuild)
            return self.get(name)

    def delete(self, name: str) -> None:
        """Delete a collection; refused while an alias points at it (requests through the alias would
        start failing) and for an alias's own name (removing the alias is a separate, explicit call)."""
        validate_name(name)
        with self._lock:
            if (target := self.aliases.target(name)) is not None:
                raise CollectionExists(
                    f"name: {name!r} is an alias of {target!r}; DELETE /v1/aliases/{name} removes the alias, "
                    f"DELETE /v1/collections/{target} the collection"
                )
            if aliases := self.aliases.of(name):
                raise CollectionExists(
                    f"name: collection {name!r} is the target of alias(es) {', '.join(aliases)}; move or remove "
                    "them first"
                )
            folder = self.root / name
            slot = self._slots.pop(name, None)
            if slot is None and not folder.exists():
                raise CollectionNotFound(f"collection {name!r} does not exist")
            if slot is not None and slot.collection is not None:
                slot.collection.close(snapshot=False)
            trash = self.root / f".deleted-{name}-{time.time_ns()}"
            folder.rename(trash)  # one atomic step hides it; the files go after
            shutil.rmtree(trash, ignore_errors=True)

    def names(self) -> list[str]:
        return sorted(self._slots)

    def describe(self, name: str) -> dict[str, Any]:
        """Stats of a ready collection, or its name, status and error when it is unavailable; with the
        aliases that point at it."""
        name = self.resolve(name)
        slot = self._slots.get(name)
        if slot is None:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        aliases = {"aliases": self.aliases.of(name)}
        if slot.collection is None:
            return {"name": name, "status": "unavailable", "error": slot.error, **aliases}
        return {**slot.collection.stats(), **aliases}

    # ---- aliases ----
    def point_alias(self, alias: str, collection: str) -> str | None:
        """Create or move an alias in one step; returns the collection it pointed at before."""
        validate_name(alias)
        validate_name(collection)
        with self._lock:
            if collection in self.aliases.items():
                raise InvalidDocument(f"collection: {collection!r} is an alias; an alias points at a collection")
            return self.aliases.point(alias, collection, set(self._slots))

    def remove_alias(self, alias: str) -> str:
        validate_name(alias)
        with self._lock:
            return self.aliases.remove(alias)

    def close(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                if slot.collection is not None:
                    slot.collection.close()
            self._slots.clear()
