"""An asyncio micro-batcher: concurrent requests in one worker are scored in one model call.

BentoML's adaptive batching only applies to HTTP calls of a ``batchable=True`` API taking an
array; calling such an API from another one (``self.method(...)``) goes back through the
service's own HTTP stack and serialisation. This batcher does the equivalent inside the worker:
each request enqueues its rows and awaits a future; one task takes every request waiting (up to
``max_records`` rows, waiting at most ``max_wait_s`` for more), scores them with a single call
on a dedicated thread (or on the event loop, for a scorer fast enough), and hands each request
its slice of the results.

At low load a request is scored as soon as it arrives (plus ``max_wait_s``); under load the
queue fills while the previous batch is scored, so batches grow with traffic by themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Row = dict[str, Any]
Result = TypeVar("Result")
# Scores a list of rows and returns one result per row, in order.
ScoreFn = Callable[[list[Row]], Sequence[Result]]


@dataclass
class _Pending(Generic[Result]):
    """One request's rows and the future its slice of the results goes to."""

    rows: list[Row]
    future: asyncio.Future[list[Result]] = field(repr=False)


class MicroBatcher(Generic[Result]):
    """Gathers rows from concurrent callers and scores them together with ``score``."""

    def __init__(self, score: ScoreFn, executor: Executor | None, max_records: int,
                 max_wait_s: float) -> None:
        """Score with ``score`` on ``executor`` (None: on the event loop), ``max_records`` rows at most.

        A single request larger than ``max_records`` is still scored, alone.
        """
        self._score = score
        self._executor = executor
        self._max_records = max_records
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[Result]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._carry: _Pending[Result] | None = None
        self._in_flight = 0  # submit() calls not yet answered

    async def submit(self, rows: list[Row]) -> list[Result]:
        """Score ``rows`` as part of the next batch; return their results in order."""
        self._in_flight += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="micro-batcher")
            future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
            await self._queue.put(_Pending(rows, future))
            return await future
        finally:
            self._in_flight -= 1

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop the batching task; requests still queued get a ``RuntimeError``.

        With ``drain_timeout_s``, first wait (up to that long) for every submitted request to be
        answered: a model swapped out of service retires without failing its last requests.
        """
        deadline = asyncio.get_running_loop().time() + drain_timeout_s
        while self._in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting = [self._carry] if self._carry else []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        _fail(waiting, RuntimeError("service is shutting down"))

    async def _run(self) -> None:
        """Take batches off the queue and score them, forever."""
        while True:
            batch = await self._next_batch()
            await self._score_batch(batch)

    async def _next_batch(self) -> list[_Pending[Result]]:
        """The first waiting request plus what else arrives within the wait, up to the cap."""
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.rows)
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while size < self._max_records:
            pending = await self._get_before(deadline)
            if pending is None:
                break
            if size + len(pending.rows) > self._max_records:
                self._carry = pending  # too big to join: it leads the next batch
                break
            batch.append(pending)
            size += len(pending.rows)
        return batch

    async def _get_before(self, deadline: float) -> _Pending[Result] | None:
        """The next queued request, waiting no later than ``deadline``; None if none came."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    async def _score_batch(self, batch: list[_Pending[Result]]) -> None:
        """Score the batch's rows in one call and resolve each request's future."""
        live = [p for p in batch if not p.future.done()]  # timed-out callers are skipped
        if not live:
            return
        rows = [row for pending in live for row in pending.rows]
        loop = asyncio.get_running_loop()
        try:
            if self._executor is None:
                results = self._score(rows)
            else:
                results = await loop.run_in_executor(self._executor, self._score, rows)
        except asyncio.CancelledError:
            _fail(live, RuntimeError("service is shutting down"))
            raise
        except Exception as exc:  # handed to every caller, which answers with an error
            _fail(live, exc)
            return
        start = 0
        for pending in live:
            end = start + len(pending.rows)
            if not pending.future.done():
                pending.future.set_result(list(results[start:end]))
            start = end


def _fail(batch: list[_Pending[Result]], exc: BaseException) -> None:
    """Hand ``exc`` to every request of ``batch`` still waiting."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
