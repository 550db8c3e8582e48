"""The routing reloader: keeps a replica serving the models its routing document names.

:class:`RoutingReloader` is the state machine behind the service's routing watcher, apart from
BentoML so that it can be tested on its own. The service gives it three things: how to read the
document's signature (:func:`mlops_template.serving.routing.document_signature`: what changes
when the document is rewritten), how to load and swap in the document's models, and
:class:`ReloadHooks` for what it counts and publishes.

A document is *applied* only once its models serve. Until then it is retried, backing off up to
:data:`MAX_RELOAD_BACKOFF_S` apart, however many polls it takes, whether the load failed at
start-up or on a later poll: a model that reaches the store (or the object store) after the
document that names it is picked up, with one failure counted and logged per document. A
document refused by a trust check (:class:`~mlops_template.serving.routing.RoutingRefused`) is
counted and logged once and not retried until it changes; it is not applied either. A document
that disappears is logged once; an object store that cannot be reached is polled with the same
back-off and logged once when it goes away and once when it is back. The current models serve
meanwhile in every case.

:attr:`RoutingReloader.applied` says whether the document last read is the one whose models serve
(published as ``model_routing_applied``; with no document at all, the pinned model is what should
serve, so that counts as applied).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlops_template.core.objectstore import StoreUnavailable
from mlops_template.serving.routing import RoutingRefused

logger = logging.getLogger(__name__)

MAX_RELOAD_BACKOFF_S = 30.0  # a failing routing reload is retried at most this far apart
Signature = tuple[Any, ...]
T = TypeVar("T")


class _Unread:
    """The signature before any read succeeded (distinct from None: no document)."""

    def __repr__(self) -> str:
        return "UNREAD"


UNREAD: Any = _Unread()


@dataclass
class ReloadHooks:
    """What the reloader reports: a failed load (counted once per document), a trust refusal,
    and whether the document's models serve (after every change of state)."""

    failed: Callable[[], None] = field(default=lambda: None)
    refused: Callable[[RoutingRefused], None] = field(default=lambda exc: None)
    applied: Callable[[bool], None] = field(default=lambda applied: None)


class RoutingReloader:
    """Follows one routing document: see the module doc for the rules."""

    def __init__(self, location: str | Path, read_signature: Callable[[], Awaitable[Signature | None]],
                 apply: Callable[[], Awaitable[None]], interval: float, hooks: ReloadHooks | None = None,
                 max_backoff: float = MAX_RELOAD_BACKOFF_S, clock: Callable[[], float] = time.monotonic) -> None:
        """``read_signature`` and ``apply`` are awaited (the service runs them off the event loop);
        ``apply`` raises RoutingRefused on a trust refusal and anything else on a failed load."""
        self.location = location
        self.read_signature = read_signature
        self.apply = apply
        self.interval = interval
        self.hooks = hooks or ReloadHooks()
        self.max_backoff = max_backoff
        self.clock = clock
        self.seen: Any = UNREAD  # the signature last read (None: there is no document)
        self.applied_signature: Any = None  # the signature of the document whose models serve (None: the pinned model)
        self.settled: Any = None  # not retried until the document changes: applied, or refused
        self.failed_signature: Any = None  # the document whose load failed, retried after retry_at
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.missing = False
        self.outage_since: float | None = None  # when the store stopped answering
        self.unreachable = 0

    @property
    def applied(self) -> bool:
        """Whether the document last read is the one whose models serve (no document: the pinned model)."""
        return self.seen is not UNREAD and self.seen == self.applied_signature

    def state(self) -> dict[str, Any]:
        """What ``/readyz`` shows: applied or not, and the failing streak's error, if any."""
        state: dict[str, Any] = {"document": str(self.location), "applied": self.applied}
        if self.failed_signature is not None:
            state["retrying"] = {"failures": self.failures, "error": self.last_error,
                                 "next_attempt_in_s": round(max(self.retry_at - self.clock(), 0.0), 1)}
        return state

    def _backoff(self, attempts: int) -> float:
        return min(self.interval * 2 ** attempts, self.max_backoff)

    # --- start-up ------------------------------------------------------------------------------

    def start(self, read_signature_now: Callable[[], Signature | None], load: Callable[[], T],
              fallback: str) -> T | None:
        """Load the document's models at start-up: what ``load`` returns, or None (``fallback``
        serves; the log says so).

        The signature is read before the document, so a document rewritten in between is seen as
        changed on the first poll. It counts as applied only when ``load`` succeeded: a failure is
        retried by :meth:`poll` (not counted again), a refusal waits for another document.
        """
        try:
            signature: Any = read_signature_now()
        except StoreUnavailable as exc:
            logger.error("routing document %s unreachable at startup (%s)", self.location, exc)
            signature = UNREAD
        self.seen = signature
        try:
            loaded = load()
        except RoutingRefused as exc:
            self.hooks.refused(exc)
            self.hooks.failed()
            logger.error("routing document %s refused at startup (%s: %s): serving %s", self.location,
                         exc.reason, exc, fallback)
            self._settle(signature, applied=False)
            return None
        except Exception as exc:
            self.hooks.failed()
            logger.error("routing document %s not applied at startup (%s: %s): serving %s; retrying", self.location,
                         type(exc).__name__, exc, fallback)
            logger.debug("routing document %s: the start-up failure's traceback", self.location, exc_info=True)
            self._failed(signature, exc)
            return None
        self._settle(signature, applied=True)
        return loaded

    # --- polling -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll for ever (until cancelled); a failure never stops the watching."""
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            delay = await self.poll()

    async def poll(self) -> float:
        """Read the signature once, load the document if it needs loading; return the seconds to
        wait before the next poll (longer while the store is unreachable)."""
        try:
            signature = await self.read_signature()
        except StoreUnavailable as exc:
            if self.outage_since is None:
                self.outage_since = self.clock()
                self.hooks.failed()
                logger.error("routing document %s unreachable (%s): current models kept; retrying with back-off",
                             self.location, exc)
            self.unreachable += 1
            return self._backoff(self.unreachable)
        if self.outage_since is not None:
            logger.info("routing document %s reachable again after %.0f s", self.location,
                        self.clock() - self.outage_since)
            self.outage_since, self.unreachable = None, 0
        self.seen = signature
        if signature is None:
            if not self.missing:
                logger.warning("routing file %s is gone: current models kept until it returns", self.location)
            self.missing = True
            self.hooks.applied(self.applied)
            return self.interval
        self.missing = False
        waiting = signature == self.failed_signature and self.clock() < self.retry_at
        if signature != self.settled and not waiting:
            await self._load(signature)
        self.hooks.applied(self.applied)
        return self.interval

    async def _load(self, signature: Signature) -> None:
        """Apply the document with ``signature``; record the outcome."""
        try:
            await self.apply()
        except RoutingRefused as exc:
            self.hooks.refused(exc)
            self.hooks.failed()
            logger.error("routing document %s refused (%s: %s): current models kept until a trusted document "
                         "replaces it", self.location, exc.reason, exc)
            self._settle(signature, applied=False)
            return
        except Exception as exc:
            if signature != self.failed_signature:  # counted and logged once per routing document
                self.hooks.failed()
                logger.error("routing reload from %s failed (%s: %s): current models kept; retrying",
                             self.location, type(exc).__name__, exc)
                logger.debug("routing reload from %s: the failure's traceback", self.location, exc_info=True)
            self._failed(signature, exc)
            return
        if signature == self.failed_signature:
            logger.info("routing reload from %s succeeded after %d failed attempt(s)", self.location, self.failures)
        self._settle(signature, applied=True)

    def _failed(self, signature: Any, exc: BaseException) -> None:
        """One more failed attempt at ``signature``; the next is due after the back-off.

        With no document (``None``) there is nothing to retry: the next document that appears is loaded.
        """
        self.last_error = f"{type(exc).__name__}: {exc}"
        if signature is None:
            self.hooks.applied(self.applied)
            return
        if signature != self.failed_signature:
            self.failures = 0
        self.failures, self.failed_signature = self.failures + 1, signature
        self.retry_at = self.clock() + self._backoff(self.failures)
        self.hooks.applied(self.applied)

    def _settle(self, signature: Any, applied: bool) -> None:
        """``signature`` needs no retry: its models serve (``applied``), or it was refused."""
        self.settled = signature
        if applied:
            self.applied_signature = signature
        self.failures, self.failed_signature, self.last_error = 0, None, None
        self.hooks.applied(self.applied)
