"""The tests' polling helper: returns the first truthy value, fails naming what and the last value."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.waiting import WaitTimeout, exited, poll, wait_until


def test_returns_the_first_truthy_value():
    values = iter([0, None, [], "ready"])
    assert wait_until(lambda: next(values), timeout=5, interval=0.01, what="values") == "ready"


class Pending:
    """A falsy answer that says which try it was."""

    def __init__(self, n: int):
        self.n = n

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Pending({self.n})"


def test_a_timeout_names_what_and_the_last_value():
    tries = iter(range(1, 10_000))
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"the count: not within 0.3 s; last seen: Pending\((\d+)\)") as raised:
        wait_until(lambda: Pending(next(tries)), timeout=0.3, interval=0.05, what="the count")
    assert 0.3 <= time.monotonic() - started < 2
    assert str(raised.value).endswith(f"Pending({next(tries) - 1})")  # the last try, not the first


def test_ignored_exceptions_are_not_yet_and_others_propagate():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return True

    assert wait_until(flaky, timeout=5, interval=0.01, ignore=(ConnectionError,))
    with pytest.raises(WaitTimeout, match="ConnectionRefusedError"):
        wait_until(lambda: (_ for _ in ()).throw(ConnectionRefusedError("no")), timeout=0.1, interval=0.02,
                   ignore=(ConnectionError,))
    with pytest.raises(KeyError):
        wait_until(lambda: {}["missing"], timeout=5, interval=0.01, ignore=(ConnectionError,))


def test_abort_stops_at_once_when_the_process_died():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="server: gave up waiting: the process exited with 3"):
        wait_until(lambda: False, timeout=30, what="server", abort=exited(process))
    assert time.monotonic() - started < 1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="interval > 0"):
        wait_until(lambda: True, timeout=1, interval=0)


def test_poll_returns_the_last_value_done_or_not():
    values = iter(range(100_000))
    assert poll(lambda: next(values), lambda v: v >= 3, timeout=5, interval=0.01) == 3
    started = time.monotonic()
    assert poll(lambda: "partial log", lambda text: "end" in text, timeout=0.2, interval=0.05) == "partial log"
    assert 0.2 <= time.monotonic() - started < 2
