"""Functional overload check: beyond MAX_CONCURRENCY requests get a fast 503, then it recovers.

Not a timing test (those live in benchmarks/): with one request allowed per worker and each
admitted request held about 300 ms by the batch wait, a simultaneous burst must see 503s with
``Retry-After``, and the next request after the burst must be scored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from mlops_template.serving import guard as request_guard

BURST = 12


def test_burst_is_shed_then_recovers(start_server: Callable, bento: dict) -> None:
    """Some of a burst get 503 overload, none fail otherwise, and the service recovers."""
    body = {"records": bento["records"][:1]}
    with start_server("overload", MAX_CONCURRENCY="1", BATCH_WAIT_MS="300") as url:
        def post(_: int) -> requests.Response:
            return requests.post(f"{url}/predict", json=body, timeout=30)

        with ThreadPoolExecutor(BURST) as pool:
            responses = list(pool.map(post, range(BURST)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
        shed = next(r for r in responses if r.status_code == 503)
        assert shed.json()["error"] == "overload" and shed.headers["Retry-After"] == "1"
        recovered = requests.post(f"{url}/predict", json=body, timeout=30)
        assert recovered.status_code == 200, recovered.text
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f'model_rejected_requests_total{{reason="overload"}} {statuses.count(503)}.0' \
            in metrics


def test_shedding_is_logged_as_a_count_not_a_line_per_request(monkeypatch, caplog) -> None:
    """Hundreds of shed requests make one warning per interval, carrying their number."""
    clock = [1000.0]
    monkeypatch.setattr(request_guard.time, "monotonic", lambda: clock[0])
    shed_log = request_guard.ShedLog(interval_s=10.0)
    with caplog.at_level(logging.WARNING, logger=request_guard.__name__):
        for index in range(300):
            shed_log.shed(f"r{index}")
        clock[0] += 10.0
        shed_log.shed("last")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "shed 1 request(s)" in lines[0] and "(latest r0)" in lines[0]
    assert "shed 300 request(s)" in lines[1] and "(latest last)" in lines[1]
