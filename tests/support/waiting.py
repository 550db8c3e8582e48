"""The tests' one way to wait for something: poll a predicate until it holds or time runs out.

Why one helper: hand-written ``while time.monotonic() < deadline`` loops each forgot something
(a loop that ends silently when time runs out, a failure that does not say what it last saw,
a process that died long before the deadline). :func:`wait_until` fails with ``what``, the
timeout and the last value (or exception) the predicate gave, and stops at once when
``abort`` says waiting is pointless. :func:`poll` is its sibling for waits whose caller asserts on
the last value itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time (an assertion failure, with the last value)."""


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition",
               ignore: tuple[type[BaseException], ...] = (), abort: Callable[[], str | None] | None = None,
               context: Callable[[], str] | None = None) -> T:
    """Call ``predicate()`` every ``interval`` seconds until it returns something truthy; return that.

    ``ignore``: exceptions that count as "not yet" (a server still starting refuses connections).
    ``abort``: called before each try; a string it returns stops the wait at once with a
    RuntimeError naming ``what`` and that reason (a server process that exited, say).
    ``context``: called on failure, its text appended to the message (a server log's tail, say).
    Raises :class:`WaitTimeout` naming ``what``, the timeout and the last value or exception.
    The predicate is always tried at least once, and once more after the deadline has passed.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"timeout must be >= 0 and interval > 0, got {timeout} and {interval}")
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if abort is not None and (reason := abort()):
            raise RuntimeError(f"{what}: gave up waiting: {reason}{_more(context)}")
        past_deadline = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if past_deadline:
            raise WaitTimeout(f"{what}: not within {timeout:g} s; last seen: {last!r:.2000}{_more(context)}")
        time.sleep(interval)


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 0.2) -> T:
    """Call ``read()`` until ``done(value)`` holds or ``timeout`` seconds pass; return the last value.

    For waits whose caller then asserts on the value itself (a log that must hold every record
    sent), where naming what is missing says more than a timeout would.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"timeout must be >= 0 and interval > 0, got {timeout} and {interval}")
    deadline = time.monotonic() + timeout
    while True:
        past_deadline = time.monotonic() >= deadline
        value = read()
        if past_deadline or done(value):
            return value
        time.sleep(interval)


def _more(context: Callable[[], str] | None) -> str:
    return "" if context is None else f"\n{context()}"


def exited(process) -> Callable[[], str | None]:
    """An ``abort`` for :func:`wait_until`: a reason once the ``subprocess.Popen`` ``process`` has exited."""
    def check() -> str | None:
        code = process.poll()
        return None if code is None else f"the process exited with {code}"
    return check
