"""Functional overload check: beyond MAX_CONCURRENCY requests get a fast 503, then it recovers.

Not a timing test (those live in benchmarks/): with one request allowed per worker and each
admitted request held about 300 ms by the batch wait, a simultaneous burst must see 503s with
``Retry-After``, and the next request after the burst must be scored.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

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
