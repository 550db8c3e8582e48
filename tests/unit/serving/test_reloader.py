"""The routing reloader's state machine (serving/reloader.py), without BentoML: a fake document
signature, a fake model store whose fetch fails a given number of times, and a fake clock.

The first test is the replica that never caught up: the document's model cannot be fetched at
start-up, so the pinned model serves; the reloader must keep retrying (backing off) until the
document's model serves, and say meanwhile that the document is not applied.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mlops_template.core.objectstore import StoreUnavailable
from mlops_template.serving.models import ModelUnavailable
from mlops_template.serving.reloader import ReloadHooks, RoutingReloader
from mlops_template.serving.routing import RoutingRefused

INTERVAL = 1.0
MAX_BACKOFF = 8.0


class Replica:
    """What the reloader drives: a document (its signature and the model it names), a store whose
    fetch fails ``fetch_failures`` more times, the model that serves, and what the hooks reported."""

    def __init__(self, signature: Any = ("doc", 1), model: str = "v8", fetch_failures: int = 0) -> None:
        self.signature, self.model = signature, model
        self.fetch_failures = fetch_failures
        self.refuse: str | None = None  # a trust refusal reason for the current document
        self.unreachable = False
        self.serving = "v7 (pinned)"
        self.now = 0.0
        self.attempts: list[float] = []
        self.counted = 0
        self.refusals: list[str] = []
        self.applied: list[bool] = []

    def clock(self) -> float:
        return self.now

    def read_signature_now(self) -> Any:
        if self.unreachable:
            raise StoreUnavailable("the store does not answer")
        return self.signature

    async def read_signature(self) -> Any:
        return self.read_signature_now()

    def load(self) -> str:
        """Load the document's model (what the service's loader does), failing as told."""
        self.attempts.append(self.now)
        if self.refuse is not None:
            raise RoutingRefused(self.refuse, f"the document is refused ({self.refuse})")
        if self.fetch_failures > 0:
            self.fetch_failures -= 1
            raise ModelUnavailable(f"its champion model adult-income:{self.model} is not in the model store")
        return self.model

    async def apply(self) -> None:
        self.serving = self.load()

    def reloader(self) -> RoutingReloader:
        hooks = ReloadHooks(failed=self._count, refused=lambda exc: self.refusals.append(exc.reason),
                            applied=self.applied.append)
        return RoutingReloader("s3://bucket/serving/routing.json", self.read_signature, self.apply, INTERVAL,
                               hooks, max_backoff=MAX_BACKOFF, clock=self.clock)

    def _count(self) -> None:
        self.counted += 1

    def start(self, reloader: RoutingReloader) -> None:
        loaded = reloader.start(self.read_signature_now, self.load, "the pinned model v7")
        if loaded is not None:
            self.serving = loaded

    def poll_for(self, reloader: RoutingReloader, seconds: float) -> None:
        """Poll as the watcher does (waiting what each poll asks) for ``seconds`` of fake time."""
        end = self.now + seconds
        while self.now < end:
            self.now += asyncio.run(reloader.poll())


def test_a_model_that_cannot_be_fetched_at_start_is_retried_until_the_document_serves() -> None:
    replica = Replica(fetch_failures=4)
    reloader = replica.reloader()
    replica.start(reloader)
    assert replica.serving == "v7 (pinned)"
    assert not reloader.applied and replica.applied[-1] is False
    state = reloader.state()
    assert state["applied"] is False and state["retrying"]["failures"] == 1
    assert "not in the model store" in state["retrying"]["error"]

    replica.poll_for(reloader, 60)
    assert replica.serving == "v8"
    assert reloader.applied and replica.applied[-1] is True
    assert "retrying" not in reloader.state()
    assert replica.counted == 1  # one failure counted for the document, however many attempts
    # backing off: 2, 4, 8, 8 s between attempts (interval 1 s, doubling, at most 8 s)
    gaps = [b - a for a, b in zip(replica.attempts, replica.attempts[1:], strict=False)]
    assert gaps == [2.0, 4.0, 8.0, 8.0]


def test_a_document_that_applies_at_start_is_not_reloaded() -> None:
    replica = Replica()
    reloader = replica.reloader()
    replica.start(reloader)
    replica.poll_for(reloader, 10)
    assert replica.serving == "v8" and replica.attempts == [0.0] and reloader.applied


def test_a_failing_reload_is_counted_once_and_retried_until_the_model_arrives(caplog: pytest.LogCaptureFixture) -> None:
    replica = Replica(model="v7")
    reloader = replica.reloader()
    replica.start(reloader)
    replica.signature, replica.model, replica.fetch_failures = ("doc", 2), "v8", 3
    with caplog.at_level(logging.INFO, logger="mlops_template.serving.reloader"):
        replica.poll_for(reloader, 5)
        assert replica.serving == "v7" and not reloader.applied
        replica.poll_for(reloader, 30)
    assert replica.serving == "v8" and reloader.applied
    assert replica.counted == 1
    assert caplog.text.count("routing reload from") == 2  # the failure once, the success once
    assert "succeeded after 3 failed attempt(s)" in caplog.text


def test_a_new_document_is_tried_at_once_even_during_a_back_off() -> None:
    replica = Replica(fetch_failures=100)
    reloader = replica.reloader()
    replica.start(reloader)
    replica.poll_for(reloader, 20)  # backing off 8 s by now
    replica.signature, replica.model, replica.fetch_failures = ("doc", 2), "v9", 0
    before = replica.now
    replica.poll_for(reloader, INTERVAL)
    assert replica.serving == "v9" and replica.attempts[-1] == before
    assert replica.counted == 1  # the new document loaded at its first attempt


def test_a_refused_document_is_counted_once_and_waits_for_another() -> None:
    replica = Replica()
    replica.refuse = "bad_signature"
    reloader = replica.reloader()
    replica.start(reloader)
    replica.poll_for(reloader, 30)
    assert replica.serving == "v7 (pinned)" and replica.attempts == [0.0]
    assert replica.refusals == ["bad_signature"] and replica.counted == 1
    assert not reloader.applied and "retrying" not in reloader.state()
    replica.refuse, replica.signature = None, ("doc", 2)
    replica.poll_for(reloader, INTERVAL)
    assert replica.serving == "v8" and reloader.applied


def test_an_unreachable_store_is_counted_once_per_outage_and_polled_with_back_off(
        caplog: pytest.LogCaptureFixture) -> None:
    replica = Replica()
    reloader = replica.reloader()
    replica.start(reloader)
    replica.unreachable = True
    with caplog.at_level(logging.INFO, logger="mlops_template.serving.reloader"):
        delays = [asyncio.run(reloader.poll()) for _ in range(5)]
        replica.unreachable = False
        assert asyncio.run(reloader.poll()) == INTERVAL
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert replica.counted == 1
    assert caplog.text.count("unreachable") == 1 and caplog.text.count("reachable again") == 1
    assert reloader.applied and replica.attempts == [0.0]  # the same document: nothing to reload


def test_unreachable_at_start_then_loaded_once_the_store_answers() -> None:
    replica = Replica()
    replica.unreachable = True
    reloader = replica.reloader()
    replica.fetch_failures = 1  # the store is down: the document's model cannot be fetched either
    replica.start(reloader)
    assert replica.serving == "v7 (pinned)" and not reloader.applied
    replica.unreachable = False
    replica.poll_for(reloader, 5)
    assert replica.serving == "v8" and reloader.applied


def test_a_document_that_disappears_is_logged_once_and_the_models_kept(caplog: pytest.LogCaptureFixture) -> None:
    replica = Replica()
    reloader = replica.reloader()
    replica.start(reloader)
    replica.signature = None
    with caplog.at_level(logging.WARNING, logger="mlops_template.serving.reloader"):
        replica.poll_for(reloader, 5)
    assert caplog.text.count("is gone") == 1
    assert replica.serving == "v8" and not reloader.applied  # serving a document that is no longer there
    replica.signature = ("doc", 2)
    replica.poll_for(reloader, INTERVAL)
    assert reloader.applied and replica.attempts == [0.0, 5.0]


def test_no_document_at_start_means_the_pinned_model_is_what_should_serve() -> None:
    replica = Replica(signature=None)
    reloader = replica.reloader()
    replica.fetch_failures = 1  # reading a document that is not there fails
    replica.start(reloader)
    assert replica.serving == "v7 (pinned)" and reloader.applied
    replica.poll_for(reloader, 3)
    assert replica.attempts == [0.0]
