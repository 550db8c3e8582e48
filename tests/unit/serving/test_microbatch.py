"""The micro-batcher: concurrent requests share one scoring call, each gets its own slice."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlops_template.serving.microbatch import MicroBatcher


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


def test_a_failing_batch_fails_its_requests_only() -> None:
    """An error reaches every caller of the failed batch; the next batch is scored normally."""
    scorer = RecordingScorer(fail_on=3)

    async def scenario() -> tuple[list, list]:
        batcher = MicroBatcher(scorer, None, max_records=100, max_wait_s=0.005)
        failed = await submit_all(batcher, [[{"x": 1}], [{"x": 3}]])
        later = await submit_all(batcher, [[{"x": 4}]])
        await batcher.close()
        return failed, later

    failed, later = asyncio.run(scenario())
    assert all(isinstance(answer, ValueError) for answer in failed)
    assert later == [[8]]
