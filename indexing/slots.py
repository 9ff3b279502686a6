"""The vector-id -> slot table of a vector index, as sorted numpy arrays.

A filter can hand a search 100k vector ids; a Python dict resolves them one at a time, a sorted
array in one vectorised `searchsorted`. Writes stay cheap the way an LSM tree keeps them cheap: a
replaced or deleted id is updated in place, a new id goes to a small sorted delta, and the delta is
merged into the main arrays once it holds an eighth of them, so an insert costs O(1) amortised
copies however large the index is.
"""

from __future__ import annotations

import numpy as np

MIN_DELTA = 1024  # the delta merges once it holds more than max(MIN_DELTA, main / 8) ids
_DEAD = -1


class SlotTable:
    """Maps vector ids to the slots holding their live vectors; -1 for ids not (or no longer) held."""

    def __init__(self, vids: np.ndarray | None = None, slots: np.ndarray | None = None) -> None:
        vids = np.zeros(0, np.int64) if vids is None else np.asarray(vids, np.int64)
        slots = np.zeros(0, np.int64) if slots is None else np.asarray(slots, np.int64)
        self._keys, self._slots = _sorted_unique(vids, slots)
        self._delta_keys = np.zeros(0, np.int64)
        self._delta_slots = np.zeros(0, np.int64)
        self._live = int((self._slots >= 0).sum())

    def __len__(self) -> int:
        return self._live

    def slots_of(self, vids: np.ndarray) -> np.ndarray:
        """The slot of each id, -1 where it is not held."""
        vids = np.asarray(vids, np.int64)
        out = _find(self._keys, self._slots, vids)
        if len(self._delta_keys):
            in_delta = _find(self._delta_keys, self._delta_slots, vids, missing=-2)
            out = np.where(in_delta != -2, in_delta, out)
        return out

    def assign(self, vids: np.ndarray, slots: np.ndarray) -> None:
        """Point `vids` at `slots` (ids appear once; the caller has freed their old slots)."""
        vids, slots = np.asarray(vids, np.int64), np.asarray(slots, np.int64)
        for keys, values in ((self._keys, self._slots), (self._delta_keys, self._delta_slots)):
            pos, hit = _positions(keys, vids)
            self._live += int((values[pos[hit]] < 0).sum())
            values[pos[hit]] = slots[hit]
            vids, slots = vids[~hit], slots[~hit]
        if len(vids):
            self._live += len(vids)
            keys = np.concatenate([self._delta_keys, vids])
            order = np.argsort(keys, kind="stable")
            self._delta_keys = keys[order]
            self._delta_slots = np.concatenate([self._delta_slots, slots])[order]
            if len(self._delta_keys) > max(MIN_DELTA, len(self._keys) // 8):
                self._merge()

    def discard(self, vids: np.ndarray) -> np.ndarray:
        """Forget `vids`; returns the slots they held (ids not held are skipped)."""
        vids = np.asarray(vids, np.int64)
        freed = []
        for keys, values in ((self._keys, self._slots), (self._delta_keys, self._delta_slots)):
            pos, hit = _positions(keys, vids)
            held = pos[hit][values[pos[hit]] >= 0]
            freed.append(values[held].copy())
            values[held] = _DEAD
        out = np.unique(np.concatenate(freed))
        self._live -= len(out)
        return out

    def _merge(self) -> None:
        """Fold the delta into the main arrays, dropping forgotten ids."""
        keys = np.concatenate([self._keys, self._delta_keys])
        slots = np.concatenate([self._slots, self._delta_slots])
        keep = slots >= 0
        order = np.argsort(keys[keep], kind="stable")  # the delta holds no id the main arrays hold
        self._keys, self._slots = keys[keep][order], slots[keep][order]
        self._delta_keys = np.zeros(0, np.int64)
        self._delta_slots = np.zeros(0, np.int64)


def _sorted_unique(vids: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by id, the last slot of a repeated id kept."""
    order = np.argsort(vids, kind="stable")
    keys, values = vids[order], slots[order]
    last = np.ones(len(keys), bool)
    last[:-1] = keys[1:] != keys[:-1]
    return keys[last].copy(), values[last].copy()


def _positions(keys: np.ndarray, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each id sits in `keys`, and whether it is there."""
    if not len(keys):
        return np.zeros(len(vids), np.int64), np.zeros(len(vids), bool)
    pos = np.minimum(np.searchsorted(keys, vids), len(keys) - 1)
    return pos, keys[pos] == vids


def _find(keys: np.ndarray, values: np.ndarray, vids: np.ndarray, missing: int = _DEAD) -> np.ndarray:
    if not len(keys):
        return np.full(len(vids), missing, np.int64)
    pos, hit = _positions(keys, vids)
    return np.where(hit, values[pos], missing)
