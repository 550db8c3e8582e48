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

No request fails another: when scoring a batch fails, :class:`Isolation` scores its requests
again one by one, and only those that fail on their own get an error. That error is an
:class:`InputError` (the service answers 422, naming the record) when the request's own input
caused it: the scorer said so, a batchmate scored while it failed, or a control record (the last
one scored, else one the service supplies) still scores. Otherwise the model itself is failing and
the original exception is the answer (500). The failing record is found by bisecting the request's
rows, at most about ``2 * log2(rows)`` extra calls.
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
# Told of each isolation: how many requests failed for their own input, how many for the service.
IsolationHook = Callable[[int, int], None]


class InputError(ValueError):
    """A request whose own records cannot be scored; the message is safe to show its client.

    A scorer may raise it itself for rows it knows it cannot take; :class:`Isolation` raises it
    for a request that fails on its own while the model demonstrably scores other rows.
    """

    def __init__(self, message: str, record: int | None = None) -> None:
        """``record``: the index, within its request, of a record that fails (None: unknown)."""
        super().__init__(message)
        self.record = record


class Isolation(Generic[Result]):
    """Re-scores the requests of a failed call on their own and decides whom each failure blames."""

    def __init__(self, score: ScoreFn, executor: Executor | None, control: list[Row] | None = None,
                 on_isolation: IsolationHook | None = None) -> None:
        """Score with ``score`` on ``executor`` (None: on the event loop).

        ``control``: rows known to score (e.g. a contract sample the model was checked on), used
        until a real request has scored; ``on_isolation`` counts what :meth:`judge` decides.
        """
        self._score = score
        self._executor = executor
        self.control = control
        self._on_isolation = on_isolation

    async def call(self, rows: list[Row]) -> Sequence[Result]:
        """Score ``rows`` on the executor (or the loop); remember one of them as the control."""
        if self._executor is None:
            results = self._score(rows)
        else:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._score, rows)
        self.control = rows[:1]
        return results

    async def _fails(self, rows: list[Row]) -> bool:
        """Whether scoring ``rows`` on their own raises."""
        try:
            await self.call(rows)
        except asyncio.CancelledError:
            raise
        except Exception:
            return True
        return False

    async def judge(self, failed: list[tuple[list[Row], BaseException]], others_scored: bool,
                    ) -> list[BaseException]:
        """The error each request that failed on its own gets: an :class:`InputError` or its own.

        ``failed`` holds each such request's rows and the exception scoring them alone raised;
        ``others_scored`` says whether a batchmate scored meanwhile.
        """
        control = self.control
        model_works = others_scored or (control is not None and not await self._fails(control))
        verdicts: list[BaseException] = []
        for rows, exc in failed:
            if isinstance(exc, InputError):
                verdicts.append(exc)
            elif model_works:
                record = await self._first_failing_record(rows)
                where = f"record {record}" if record is not None else "its records, taken together,"
                verdicts.append(InputError(f"{where} could not be scored: the model cannot take its values",
                                           record))
            else:
                verdicts.append(exc)
        if self._on_isolation is not None:
            blamed = sum(isinstance(v, InputError) for v in verdicts)
            self._on_isolation(blamed, len(verdicts) - blamed)
        return verdicts

    async def _first_failing_record(self, rows: list[Row]) -> int | None:
        """Bisect ``rows`` (which fail together) down to one record that fails alone, or None."""
        low, high = 0, len(rows)
        while high - low > 1:
            middle = (low + high) // 2
            if await self._fails(rows[low:middle]):
                high = middle
            elif await self._fails(rows[middle:high]):
                low = middle
            else:
                return None  # only the combination fails
        return low if high - low == 1 else None


@dataclass
class _Pending(Generic[Result]):
    """One request's rows and the future its slice of the results goes to."""

    rows: list[Row]
    future: asyncio.Future[list[Result]] = field(repr=False)


class MicroBatcher(Generic[Result]):
    """Gathers rows from concurrent callers and scores them together with ``score``."""

    def __init__(self, score: ScoreFn, executor: Executor | None, max_records: int,
                 max_wait_s: float, control: list[Row] | None = None,
                 on_isolation: IsolationHook | None = None) -> None:
        """Score with ``score`` on ``executor`` (None: on the event loop), ``max_records`` rows at most.

        A single request larger than ``max_records`` is still scored, alone. ``control`` and
        ``on_isolation`` go to the batcher's :class:`Isolation`.
        """
        self.isolation: Isolation[Result] = Isolation(score, executor, control, on_isolation)
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
        try:
            try:
                results = await self.isolation.call(rows)
            except Exception as exc:
                await self._isolate(live, exc)
                return
        except asyncio.CancelledError:
            _fail(live, RuntimeError("service is shutting down"))
            raise
        start = 0
        for pending in live:
            end = start + len(pending.rows)
            if not pending.future.done():
                pending.future.set_result(list(results[start:end]))
            start = end


    async def _isolate(self, live: list[_Pending[Result]], exc: Exception) -> None:
        """Score the requests of a failed batch one by one; fail only those that fail alone."""
        failed: list[tuple[_Pending[Result], BaseException]] = []
        scored = False
        if len(live) == 1:
            failed.append((live[0], exc))  # it already failed on its own
        else:
            for pending in live:
                try:
                    results = await self.isolation.call(pending.rows)
                except Exception as own:
                    failed.append((pending, own))
                    continue
                scored = True
                if not pending.future.done():
                    pending.future.set_result(list(results))
        verdicts = await self.isolation.judge([(p.rows, e) for p, e in failed], scored)
        for (pending, _), verdict in zip(failed, verdicts, strict=True):
            if not pending.future.done():
                pending.future.set_exception(verdict)


def _fail(batch: list[_Pending[Result]], exc: BaseException) -> None:
    """Hand ``exc`` to every request of ``batch`` still waiting."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
