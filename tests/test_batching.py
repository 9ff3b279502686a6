"""TokenBudgetBatcher: budget, ordering, isolation, deadlines and admission."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import TokenBudgetBatcher
from service.errors import DeadlineExceeded, Overloaded
from service.metrics import Metrics


class Item:
    def __init__(self, value: int, length: int) -> None:
        self.value, self.length = value, length

    def __len__(self) -> int:
        return self.length


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[list[Item]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[Item]) -> np.ndarray:
        with self.lock:
            self.batches.append(items)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and any(it.value == self.fail_on for it in items):
            raise RuntimeError("model failure")
        return np.array([[it.value, it.value * 2] for it in items], dtype=np.float32)


def _batcher(run, **kw) -> TokenBudgetBatcher:
    args = {"max_batch_tokens": 100, "max_batch_size": 8, "max_queue": 64, "linger_s": 0.01}
    args.update(kw)
    b = TokenBudgetBatcher("test", run, metrics=Metrics(), **args)
    b.start()
    return b


def test_rows_come_back_in_input_order_across_merged_requests():
    rec = Recorder()
    b = _batcher(rec)

    async def main():
        reqs = [[Item(100 * r + i, (7 * i + r) % 30 + 1) for i in range(5)] for r in range(10)]
        far = time.monotonic() + 30
        results = await asyncio.gather(*(b.submit(items, far) for items in reqs))
        for items, res in zip(reqs, results, strict=True):
            assert res.rows[:, 0].tolist() == [it.value for it in items]

    asyncio.run(main())
    b.stop()
    for batch in rec.batches:
        assert len(batch) <= 8
        assert max(len(it) for it in batch) * len(batch) <= 100 or len(batch) == 1
        lengths = [len(it) for it in batch]
        assert lengths == sorted(lengths)  # length-sorted to cut padding
    assert len(rec.batches) < 50  # requests were merged, not run one by one


def test_a_lone_request_does_not_wait_for_company():
    """The linger is for arrivals close together: one request on a quiet batcher runs at once."""
    rec = Recorder()
    b = _batcher(rec, linger_s=1.0)

    async def main():
        for value in (1, 2, 3):  # sequential: each arrives long after the one before it finished
            started = time.monotonic()
            res = await b.submit([Item(value, 3)], time.monotonic() + 30)
            assert res.rows[0, 0] == value
            assert time.monotonic() - started < 0.5
            await asyncio.sleep(1.1)

    asyncio.run(main())
    b.stop()
    assert [len(batch) for batch in rec.batches] == [1, 1, 1]


def test_a_failing_batch_fails_only_its_requests():
    b = _batcher(Recorder(fail_on=13), max_batch_size=1)

    async def main():
        far = time.monotonic() + 30
        good, bad = await asyncio.gather(b.submit([Item(1, 3)], far), b.submit([Item(13, 3)], far),
                                         return_exceptions=True)
        assert isinstance(bad, RuntimeError)
        assert good.rows[0, 0] == 1
        again = await b.submit([Item(2, 3)], time.monotonic() + 30)
        assert again.rows[0, 1] == 4

    asyncio.run(main())
    assert b.healthy
    b.stop()


def test_expired_requests_are_dropped_before_inference():
    rec = Recorder(delay=0.3)
    b = _batcher(rec, max_batch_size=1)

    async def main():
        blocker = asyncio.create_task(b.submit([Item(1, 2)], time.monotonic() + 30))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await b.submit([Item(99, 2)], time.monotonic() + 0.05)
        await blocker

    asyncio.run(main())
    b.stop()
    assert all(it.value != 99 for batch in rec.batches for it in batch)


def test_full_queue_refuses_at_admission():
    b = _batcher(Recorder(delay=0.2), max_queue=2, max_batch_size=1, linger_s=0)

    async def main():
        far = time.monotonic() + 30
        results = await asyncio.gather(*(b.submit([Item(i, 2)], far) for i in range(8)), return_exceptions=True)
        overloaded = [r for r in results if isinstance(r, Overloaded)]
        assert overloaded and overloaded[0].headers["Retry-After"] == "1"
        assert any(not isinstance(r, Exception) for r in results)

    asyncio.run(main())
    b.stop()


def test_stalled_worker_marks_unhealthy():
    b = _batcher(Recorder(delay=0.6), stall_timeout_s=0.2)

    async def main():
        task = asyncio.create_task(b.submit([Item(1, 2)], time.monotonic() + 30))
        await asyncio.sleep(0.45)
        assert not b.healthy
        await task
        assert b.healthy

    asyncio.run(main())
    b.stop()
    assert not b.healthy  # a stopped worker is not healthy either


def test_padding_ratio_cuts_a_round_into_runs_of_similar_length():
    rec = Recorder()
    b = _batcher(rec, max_batch_tokens=10_000, max_batch_size=64, max_padding_ratio=1.1)
    lengths = [5, 100, 6, 95, 5, 98, 7, 50, 52, 6]

    async def main():
        res = await b.submit([Item(i, n) for i, n in enumerate(lengths)], time.monotonic() + 30)
        assert res.rows[:, 0].tolist() == list(range(len(lengths)))

    asyncio.run(main())
    b.stop()
    assert sum(len(batch) for batch in rec.batches) == len(lengths)
    for batch in rec.batches:
        real = sum(len(it) for it in batch)
        assert max(len(it) for it in batch) * len(batch) <= 1.1 * real or len(batch) == 1
    # without the cap the whole round is one batch padded to 100 (2.3x the real tokens)
    assert 2 <= len(rec.batches) <= 5


def test_without_a_padding_ratio_the_token_budget_alone_packs_the_round():
    rec = Recorder()
    b = _batcher(rec, max_batch_tokens=10_000, max_batch_size=64)

    async def main():
        await b.submit([Item(i, n) for i, n in enumerate([5, 100, 6, 95])], time.monotonic() + 30)

    asyncio.run(main())
    b.stop()
    assert len(rec.batches) == 1


def test_a_query_overtakes_a_bulk_round_between_its_runs():
    rec = Recorder(delay=0.05)
    b = _batcher(rec, max_batch_size=2, linger_s=0)
    done: dict[str, float] = {}

    async def main():
        far = time.monotonic() + 30

        async def timed(name: str, items: list[Item], bulk: bool):
            result = await b.submit(items, far, bulk=bulk)
            done[name] = time.monotonic()
            return result

        bulk = asyncio.create_task(timed("bulk", [Item(i, 5) for i in range(20)], True))  # 10 runs of 2
        await asyncio.sleep(0.12)  # the bulk round is under way
        query = await timed("query", [Item(999, 5)], False)
        bulk_result = await bulk
        assert query.rows[0, 0] == 999 and bulk_result.rows[:, 0].tolist() == list(range(20))

    asyncio.run(main())
    b.stop()
    assert done["query"] < done["bulk"]  # it did not wait for the whole upsert
    values = [[it.value for it in batch] for batch in rec.batches]
    at = next(i for i, batch in enumerate(values) if 999 in batch)
    assert values[at] == [999] and 0 < at < len(values) - 1  # served alone, between two bulk runs


def test_queued_queries_go_before_queued_bulk_work():
    rec = Recorder(delay=0.05)
    b = _batcher(rec, max_batch_size=1, linger_s=0)

    async def main():
        far = time.monotonic() + 30
        blocker = asyncio.create_task(b.submit([Item(0, 3)], far))
        await asyncio.sleep(0.02)
        bulk = asyncio.create_task(b.submit([Item(1, 3)], far, bulk=True))
        await asyncio.sleep(0.005)
        query = asyncio.create_task(b.submit([Item(2, 3)], far))
        await asyncio.gather(blocker, bulk, query)
        assert b.depth == 0

    asyncio.run(main())
    b.stop()
    assert [batch[0].value for batch in rec.batches] == [0, 2, 1]
