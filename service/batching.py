"""Dynamic batching under a token budget, on one worker thread that owns the model.

Concurrent requests are merged into batches sorted by length and bounded by a padded-token budget
and a padding ratio: a batch of random lengths pads to its longest row (about 2x the real tokens on
MS MARCO passages), so a round is cut into runs of similar length instead. On CPU, runs of 1-2k
tokens are also faster per token than large batches (cache-resident activations).

Admission is bounded: a full queue refuses at once (503 + Retry-After) instead of growing. Work
whose client went away or whose deadline passed is dropped before inference. The event loop never runs model code.

Two lanes: bulk work (collection upserts: thousands of passages in one request) queues behind
interactive work (queries), and a bulk round stops between runs to serve queries that arrived
meanwhile, so indexing does not add its whole length to a search's latency.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from service.errors import DeadlineExceeded, Overloaded, ServiceUnavailable
from service.metrics import Metrics

log = logging.getLogger(__name__)


class Sized(Protocol):
    def __len__(self) -> int: ...


T = TypeVar("T", bound=Sized)


@dataclass
class BatchResult:
    rows: np.ndarray
    queue_s: float
    inference_s: float


@dataclass(eq=False)
class _Job(Generic[T]):
    items: Sequence[T]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    inference_s: float = 0.0
    remaining: int = 0
    rows: np.ndarray | None = None
    cancelled: bool = False

    def finish(self, result: BatchResult | None = None, error: Exception | None = None) -> None:
        def _set() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(_set)


def padded_runs(
    sorted_lengths: Sequence[int], max_size: int, max_tokens: int, max_padding_ratio: float | None
) -> list[tuple[int, int, int]]:
    """(start, end, width) of each batch over rows sorted by length: a batch ends before the row that
    would take it past `max_size` rows, `max_tokens` padded tokens, or `max_padding_ratio` x its real
    tokens (a single row always fits)."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    while start < len(sorted_lengths):
        end, width, real = start, 0, 0
        while end < len(sorted_lengths) and end - start < max_size:
            new_width, new_real = max(width, sorted_lengths[end]), real + sorted_lengths[end]
            padded = new_width * (end - start + 1)
            if end > start and (padded > max_tokens or (max_padding_ratio is not None
                                                         and padded > max_padding_ratio * new_real)):
                break
            width, real, end = new_width, new_real, end + 1
        runs.append((start, end, width))
        start = end
    return runs


class TokenBudgetBatcher(Generic[T]):
    """Batches items of many requests through `run_batch(items) -> rows` on a worker thread."""

    def __init__(self, name: str, run_batch: Callable[[list[T]], np.ndarray], *, metrics: Metrics,
                 max_batch_tokens: int, max_batch_size: int, max_queue: int, linger_s: float = 0.002,
                 stall_timeout_s: float = 60.0, max_padding_ratio: float | None = None) -> None:
        self.name = name
        self._run_batch = run_batch
        self._metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding_ratio = max_padding_ratio
        self.max_queue = max_queue
        self.linger_s = linger_s
        self.stall_timeout_s = stall_timeout_s
        self._pending: deque[_Job[T]] = deque()  # interactive lane
        self._bulk: deque[_Job[T]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._busy_since: float | None = None
        # Arrival times of the last two jobs: a job that arrives alone (the one before it came longer
        # than the linger ago) runs at once instead of waiting for company that is not coming.
        self._arrivals: deque[float] = deque([-math.inf, -math.inf], maxlen=2)
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        """False once the worker died or a batch has run longer than the stall timeout."""
        if not self._thread.is_alive():
            return False
        busy = self._busy_since
        return busy is None or time.monotonic() - busy < self.stall_timeout_s

    @property
    def depth(self) -> int:
        return len(self._pending) + len(self._bulk)

    # -- admission ----------------------------------------------------------------------------
    async def submit(self, items: Sequence[T], deadline: float,
                     is_disconnected: Callable[[], object] | None = None, bulk: bool = False) -> BatchResult:
        """Queue `items`; resolve with their rows in input order. `deadline` is time.monotonic().

        `bulk`: the low-priority lane (interactive jobs go first, and interrupt a bulk round between runs).
        """
        if self._stop or not self._thread.is_alive():
            raise ServiceUnavailable(f"the {self.name} worker is not running")
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(items=items, future=loop.create_future(), loop=loop, deadline=deadline,
                            remaining=len(items))
        with self._cond:
            if self.depth >= self.max_queue:
                self._metrics.rejected.labels(self.name).inc()
                raise Overloaded(f"the {self.name} queue is full ({self.max_queue} requests); retry later",
                                 retry_after=1.0)
            (self._bulk if bulk else self._pending).append(job)
            self._arrivals.append(time.monotonic())
            self._metrics.queue_depth.labels(self.name).set(self.depth)
            self._cond.notify()
        try:
            return await self._wait(job, is_disconnected)
        except BaseException:
            job.cancelled = True  # the worker skips rows nobody is waiting for
            raise

    async def _wait(self, job: _Job[T], is_disconnected: Callable[[], object] | None) -> BatchResult:
        while True:
            done, _ = await asyncio.wait({job.future}, timeout=0.1)
            if done:
                return job.future.result()
            if is_disconnected is not None and await is_disconnected():  # type: ignore[misc]
                self._metrics.dropped.labels(self.name, "disconnected").inc()
                raise asyncio.CancelledError("client disconnected")
            if time.monotonic() > job.deadline + self.stall_timeout_s:
                raise DeadlineExceeded("request deadline passed before the result was ready")

    # -- worker -------------------------------------------------------------------------------
    def _take(self, lane: deque[_Job[T]] | None = None) -> list[_Job[T]]:
        """Pop FIFO jobs up to a few batches' worth of tokens (fair to late small requests).

        From `lane`, else from the interactive lane when it has work, else from the bulk lane.
        """
        queue = lane if lane is not None else (self._pending if self._pending else self._bulk)
        taken: list[_Job[T]] = []
        tokens = rows = 0
        while queue and (not taken or (tokens < 4 * self.max_batch_tokens and rows < 4 * self.max_batch_size)):
            job = queue.popleft()
            taken.append(job)
            rows += len(job.items)
            tokens += sum(len(it) for it in job.items)
        self._metrics.queue_depth.labels(self.name).set(self.depth)
        return taken

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.depth and not self._stop:
                    self._cond.wait()
                if self._stop and not self.depth:
                    return
                lane = self._pending or self._bulk  # the lane this round will take from
                if self._should_linger(lane):
                    self._cond.wait(self.linger_s)
                bulk = not self._pending  # re-read: a query may have arrived while lingering
                jobs = self._take()
            self._process_safely(jobs, yield_to_interactive=bulk)

    def _should_linger(self, lane: deque[_Job[T]]) -> bool:
        """Wait for more work only when jobs are arriving close together and the batch has room.

        A lone request (a sequential client, a quiet server) would only pay the linger; under
        concurrency, arrivals come closer together than the linger and merging them pays off.
        """
        if self.linger_s <= 0 or sum(len(j.items) for j in lane) >= self.max_batch_size:
            return False
        previous, last = self._arrivals
        return last - previous < self.linger_s

    def _process_safely(self, jobs: list[_Job[T]], yield_to_interactive: bool = False) -> None:
        try:
            self._process(jobs, yield_to_interactive)
        except Exception as exc:  # keep serving: fail only the jobs of this round
            log.exception("%s batch failed", self.name)
            for job in jobs:
                if not job.future.done():
                    job.finish(error=exc)

    def _live(self, job: _Job[T], now: float) -> bool:
        if job.cancelled:
            return False
        if now > job.deadline:
            self._metrics.dropped.labels(self.name, "deadline").inc()
            job.finish(error=DeadlineExceeded("request deadline passed while queued"))
            return False
        return True

    def _process(self, jobs: list[_Job[T]], yield_to_interactive: bool = False) -> None:
        now = time.monotonic()
        jobs = [j for j in jobs if self._live(j, now)]
        entries = sorted(((len(it), ji, ii) for ji, j in enumerate(jobs) for ii, it in enumerate(j.items)))
        runs = padded_runs([e[0] for e in entries], self.max_batch_size, self.max_batch_tokens, self.max_padding_ratio)
        for start, end, width in runs:
            if yield_to_interactive and self._pending:
                self._serve_interactive()
            chunk = [e for e in entries[start:end] if not jobs[e[1]].cancelled]
            if chunk:
                self._run_chunk(jobs, chunk, width)

    def _serve_interactive(self) -> None:
        """Between two runs of a bulk round: everything the interactive lane holds now, to completion."""
        while True:
            with self._cond:
                jobs = self._take(self._pending)
            if not jobs:
                return
            self._process_safely(jobs)

    def _run_chunk(self, jobs: list[_Job[T]], chunk: list[tuple[int, int, int]], width: int) -> None:
        t0 = time.monotonic()
        for _, ji, _ in chunk:
            if jobs[ji].started is None:
                jobs[ji].started = t0
        self._busy_since = t0
        try:
            rows = self._run_batch([jobs[ji].items[ii] for _, ji, ii in chunk])
        except Exception as exc:
            log.exception("%s batch of %d failed", self.name, len(chunk))
            for ji in {ji for _, ji, _ in chunk}:
                jobs[ji].cancelled = True
                jobs[ji].finish(error=exc)
            return
        finally:
            self._busy_since = None
        elapsed = time.monotonic() - t0
        self._metrics.batch_size.labels(self.name).observe(len(chunk))
        self._metrics.batch_tokens.labels(self.name).observe(width * len(chunk))
        self._metrics.tokens.labels(self.name).inc(sum(n for n, _, _ in chunk))
        self._metrics.stage.labels(f"{self.name}_inference").observe(elapsed)
        touched = set()
        for row, (_, ji, ii) in enumerate(chunk):
            job = jobs[ji]
            if job.rows is None:
                job.rows = np.empty((len(job.items), rows.shape[1]), dtype=rows.dtype)
            job.rows[ii] = rows[row]
            job.remaining -= 1
            touched.add(ji)
        for ji in touched:
            job = jobs[ji]
            job.inference_s += elapsed
            if job.remaining == 0 and not job.cancelled:
                assert job.rows is not None and job.started is not None
                job.finish(BatchResult(job.rows, job.started - job.enqueued, job.inference_s))
