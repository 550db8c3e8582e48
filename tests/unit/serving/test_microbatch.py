"""The micro-batcher: concurrent requests share one scoring call, each gets its own slice."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlops_template.serving.microbatch import InputError, MicroBatcher


class RecordingScorer:
    """Doubles each row's ``x`` and remembers the size of every call."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    def __call__(self, rows: list[dict]) -> list[int]:
        self.calls.append(len(rows))
        if any(row["x"] == self.fail_on for row in rows):
            raise ValueError("cannot score")
        return [2 * row["x"] for row in rows]


async def submit_all(batcher: MicroBatcher, requests: list[list[dict]]) -> list:
    return await asyncio.gather(*(batcher.submit(rows) for rows in requests),
                                return_exceptions=True)


@pytest.mark.parametrize("threaded", [False, True], ids=["on-loop", "thread"])
def test_concurrent_requests_share_calls_and_get_their_own_rows(threaded: bool) -> None:
    scorer = RecordingScorer()
    requests = [[{"x": 10 * i + j} for j in range(i % 3 + 1)] for i in range(20)]

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(scorer, pool if threaded else None, max_records=16,
                                   max_wait_s=0.005)
            answers = await submit_all(batcher, requests)
            await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers == [[2 * row["x"] for row in rows] for rows in requests]
    assert sum(scorer.calls) == sum(len(rows) for rows in requests)
    assert len(scorer.calls) < len(requests), "requests were not batched"
    assert max(scorer.calls) <= 16


def test_a_failing_batch_fails_only_the_request_that_caused_it() -> None:
    """The batch is re-scored request by request: the batchmate gets its answer, the culprit an
    InputError naming its failing record; the next batch is scored normally."""
    scorer = RecordingScorer(fail_on=3)
    isolations: list[tuple[int, int]] = []

    async def scenario() -> tuple[list, list]:
        batcher = MicroBatcher(scorer, None, max_records=100, max_wait_s=0.005,
                               on_isolation=lambda *counts: isolations.append(counts))
        failed = await submit_all(batcher, [[{"x": 1}], [{"x": 3}]])
        later = await submit_all(batcher, [[{"x": 4}]])
        await batcher.close()
        return failed, later

    failed, later = asyncio.run(scenario())
    assert failed[0] == [2]
    assert isinstance(failed[1], InputError) and failed[1].record == 0
    assert later == [[8]]
    assert isolations == [(1, 0)]


@pytest.mark.parametrize("threaded", [False, True], ids=["on-loop", "thread"])
def test_a_poisoned_row_among_many_requests_fails_only_its_own(threaded: bool) -> None:
    """16 requests share batches with one whose fourth record the scorer cannot take."""
    scorer = RecordingScorer(fail_on=-1)
    requests = [[{"x": 10 * i + j} for j in range(3)] for i in range(16)]
    poisoned = [{"x": 7}, {"x": 8}, {"x": 9}, {"x": -1}, {"x": 11}]
    isolations: list[tuple[int, int]] = []

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(scorer, pool if threaded else None, max_records=1000, max_wait_s=0.01,
                                   on_isolation=lambda *counts: isolations.append(counts))
            answers = await submit_all(batcher, [*requests[:8], poisoned, *requests[8:]])
            await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    culprit = answers.pop(8)
    assert answers == [[2 * row["x"] for row in rows] for rows in requests]
    assert isinstance(culprit, InputError) and culprit.record == 3
    assert "record 3" in str(culprit) and "ValueError" not in str(culprit)
    assert isolations and all(counts == (1, 0) for counts in isolations)


def test_a_lone_failing_request_is_blamed_only_while_the_control_scores() -> None:
    """Alone in its batch, a request is an input error if a control record still scores; when
    the model fails everything, its own exception (a service fault, 500) is the answer."""
    verdicts: list[tuple[int, int]] = []

    async def lone(scorer: RecordingScorer, control: list[dict] | None) -> object:
        batcher = MicroBatcher(scorer, None, max_records=100, max_wait_s=0.001, control=control,
                               on_isolation=lambda *counts: verdicts.append(counts))
        [answer] = await submit_all(batcher, [[{"x": 5}, {"x": 3}]])
        await batcher.close()
        return answer

    blamed = asyncio.run(lone(RecordingScorer(fail_on=3), control=[{"x": 1}]))
    assert isinstance(blamed, InputError) and blamed.record == 1
    broken = BrokenScorer()
    fault = asyncio.run(lone(broken, control=[{"x": 1}]))
    assert isinstance(fault, RuntimeError) and not isinstance(fault, InputError)
    unknown = asyncio.run(lone(RecordingScorer(fail_on=3), control=None))  # nothing known to score
    assert isinstance(unknown, ValueError) and not isinstance(unknown, InputError)
    assert verdicts == [(1, 0), (0, 1), (0, 1)]


def test_when_every_request_fails_alone_none_is_blamed() -> None:
    """A model that fails on every request is the service's fault: each gets its own error."""

    async def scenario() -> list:
        batcher = MicroBatcher(BrokenScorer(), None, max_records=100, max_wait_s=0.01, control=[{"x": 1}])
        answers = await submit_all(batcher, [[{"x": i}] for i in range(4)])
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert len(answers) == 4 and all(type(a) is RuntimeError for a in answers)


def test_a_scorer_s_own_input_error_is_passed_on_as_is() -> None:
    def scorer(rows: list[dict]) -> list[int]:
        if any(row["x"] < 0 for row in rows):
            raise InputError("x must not be negative", record=None)
        return [row["x"] for row in rows]

    async def scenario() -> list:
        batcher = MicroBatcher(scorer, None, max_records=100, max_wait_s=0.001)
        answers = await submit_all(batcher, [[{"x": -1}]])
        await batcher.close()
        return answers

    [answer] = asyncio.run(scenario())
    assert isinstance(answer, InputError) and str(answer) == "x must not be negative"


class BrokenScorer:
    """A model that fails on every call (a service fault, not an input)."""

    def __call__(self, rows: list[dict]) -> list[int]:
        raise RuntimeError("model state corrupted")
