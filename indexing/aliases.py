"""Collection aliases: stable names that point at a collection and can be moved in one step.

A reindex builds `docs-v2` beside `docs-v1` while clients keep searching `docs`; moving the alias
then switches every later request at once, and `docs-v1` can be deleted after. The table is one
small JSON file beside the collections (`.aliases.json`; a leading dot is never a collection name),
replaced atomically on every change, so a crash leaves the old table or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path

from indexing.errors import CollectionExists, CollectionNotFound, IndexingError
from indexing.snapshot import atomic_write

ALIASES_FILE = ".aliases.json"
MAX_ALIASES = 1024


class AliasError(IndexingError):
    """The aliases file on disk cannot be read (the catalog refuses to guess what it held)."""


def read_aliases(root: Path) -> dict[str, str]:
    """alias -> collection, as stored under the collections folder `root` (empty when none)."""
    path = Path(root) / ALIASES_FILE
    if not path.exists():
        return {}
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AliasError(f"{path}: unreadable aliases file ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise AliasError(f"{path}: aliases file is not an object of alias: collection names")
    return table


def resolve(root: Path, name: str) -> str:
    """The collection a name means: an alias's target, else the name itself."""
    return read_aliases(root).get(name, name)


class AliasTable:
    """The aliases of one catalog; callers hold the catalog's lock around changes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._table = read_aliases(self.root)

    def items(self) -> dict[str, str]:
        return dict(sorted(self._table.items()))

    def target(self, alias: str) -> str | None:
        return self._table.get(alias)

    def of(self, collection: str) -> list[str]:
        """The aliases pointing at `collection`, sorted."""
        return sorted(a for a, c in self._table.items() if c == collection)

    def point(self, alias: str, collection: str, collections: set[str]) -> str | None:
        """Point `alias` at `collection` (creating or moving it); returns the previous target."""
        if alias in collections:
            raise CollectionExists(f"alias: {alias!r} is a collection's name; an alias needs a name of its own")
        if collection not in collections:
            raise CollectionNotFound(f"collection {collection!r} does not exist")
        if alias not in self._table and len(self._table) >= MAX_ALIASES:
            raise CollectionExists(f"alias: the catalog already holds {MAX_ALIASES} aliases")
        previous = self._table.get(alias)
        self._save({**self._table, alias: collection})
        return previous

    def remove(self, alias: str) -> str:
        """Remove an alias; returns the collection it pointed at."""
        if alias not in self._table:
            raise CollectionNotFound(f"alias {alias!r} does not exist")
        target = self._table[alias]
        self._save({a: c for a, c in self._table.items() if a != alias})
        return target

    def _save(self, table: dict[str, str]) -> None:
        atomic_write(self.root / ALIASES_FILE, json.dumps(dict(sorted(table.items())), indent=1).encode())
        self._table = table  # only once it is on disk
