"""The vector-id -> slot table against a plain dict, through random writes that force merges."""

from __future__ import annotations

import numpy as np
import pytest

from indexing import slots as slots_module
from indexing.slots import SlotTable


def _check(table: SlotTable, model: dict[int, int], probe: np.ndarray) -> None:
    got = table.slots_of(probe)
    want = np.array([model.get(int(v), -1) for v in probe], np.int64)
    np.testing.assert_array_equal(got, want)
    assert len(table) == len(model)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slot_table_matches_a_dict_through_adds_replacements_and_deletes(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slots_module, "MIN_DELTA", 8)  # merges happen every few batches
    rng = np.random.default_rng(seed)
    universe = rng.integers(0, 2**62, 400, dtype=np.int64)  # hashed ids: sparse and unordered
    initial = universe[:50]
    table = SlotTable(initial, np.arange(50))
    model = {int(v): i for i, v in enumerate(initial)}
    next_slot = 50
    merged = 0
    for _ in range(200):
        ids = np.unique(rng.choice(universe, int(rng.integers(1, 30))))
        if rng.random() < 0.6:  # an upsert: old slots freed, new ones assigned
            freed = table.discard(ids)
            assert sorted(freed.tolist()) == sorted(model.pop(int(v)) for v in ids if int(v) in model)
            new = np.arange(next_slot, next_slot + len(ids))
            next_slot += len(ids)
            table.assign(ids, new)
            model.update(zip(ids.tolist(), new.tolist(), strict=True))
        else:
            freed = table.discard(ids)
            assert sorted(freed.tolist()) == sorted(model.pop(int(v)) for v in ids if int(v) in model)
        merged += not len(table._delta_keys)
        _check(table, model, rng.choice(universe, 100))
    assert merged > 0  # the merge path ran
    _check(table, model, universe)
    absent = np.array([-5, 2**63 - 1], np.int64)
    np.testing.assert_array_equal(table.slots_of(absent), [-1, -1])


def test_a_repeated_id_keeps_its_last_slot() -> None:
    table = SlotTable(np.array([7, 3, 7]), np.array([0, 1, 2]))
    np.testing.assert_array_equal(table.slots_of(np.array([7, 3, 9])), [2, 1, -1])
    assert len(table) == 2
    assert table.discard(np.array([7, 7])).tolist() == [2]
    assert len(table) == 1
    assert SlotTable().slots_of(np.array([1])).tolist() == [-1]
