"""The served bento writes every scored record to the inference log, across restarts.

A real ``bentoml serve`` gets requests of one and several records, some sent concurrently; the
log read back with :func:`read_log` must hold each record once, under the request id the client
got back, with the features it sent and the probability it was answered. A second server on
the same directory appends to what the first wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests

from mlops_template.serving.inference_log import read_log
from tests.support.waiting import poll

SIZES = (1, 3, 1, 5, 2, 1, 4, 1)  # records per request
CONCURRENT = 8  # requests sent at once, on top of the sequential ones


def _send(url: str, records: list[dict]) -> tuple[str, list[dict], list[dict]]:
    """POST records; return the request id, the records sent and the predictions."""
    response = requests.post(f"{url}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"], records, response.json()


def _traffic(url: str, records: list[dict], offset: int) -> list[tuple[str, list[dict], list[dict]]]:
    """Sequential requests of various sizes, then a burst of concurrent single-record ones."""
    sent, start = [], offset
    for size in SIZES:
        sent.append(_send(url, records[start:start + size]))
        start += size
    with ThreadPoolExecutor(CONCURRENT) as pool:
        burst = [records[start + i:start + i + 1] for i in range(CONCURRENT)]
        sent += list(pool.map(lambda chunk: _send(url, chunk), burst))
    return sent


def _wait_for(directory: Path, count: int, timeout: float = 10.0) -> pd.DataFrame:
    """The log once it holds ``count`` entries (the writer thread lags by milliseconds)."""
    return poll(lambda: read_log(directory), lambda frame: len(frame) >= count, timeout, 0.1)


def _check(frame: pd.DataFrame, sent: list[tuple[str, list[dict], list[dict]]]) -> None:
    """Every record sent is logged once, with its request id, index, features and answer."""
    expected = sum(len(records) for _, records, _ in sent)
    assert len(frame) == expected
    assert not frame.duplicated(["request_id", "record_index"]).any()
    by_key = frame.set_index(["request_id", "record_index"])
    for request_id, records, predictions in sent:
        for index, (record, prediction) in enumerate(zip(records, predictions, strict=True)):
            row = by_key.loc[(request_id, index)]
            sent_values = {k: v for k, v in record.items() if v is not None}
            assert {k: row[k] for k in sent_values} == sent_values, (request_id, index)
            assert all(pd.isna(row[k]) for k, v in record.items() if v is None)
            assert row["probability"] == prediction["probability"]
            assert row["label"] == prediction["label"]
            assert row["model_version"] == prediction["model_version"] == "7"


def test_every_record_logged_across_restarts(start_server: Callable, bento: dict,
                                             tmp_path: Path) -> None:
    """Two server runs on one directory: the log holds every record of both."""
    log_dir = tmp_path / "inference-log"
    records = bento["records"]
    with start_server("inference-log-1", INFERENCE_LOG_DIR=str(log_dir)) as url:
        first = _traffic(url, records, 0)
        count = sum(len(r) for _, r, _ in first)
        _check(_wait_for(log_dir, count), first)
    with start_server("inference-log-2", INFERENCE_LOG_DIR=str(log_dir)) as url:
        second = _traffic(url, records, 50)
        total = count + sum(len(r) for _, r, _ in second)
        frame = _wait_for(log_dir, total)
    _check(frame, first + second)
    assert len(list(log_dir.glob("inference-*.jsonl"))) == 2  # one file per worker process


def test_disabled_log_writes_nothing(start_server: Callable, bento: dict, tmp_path: Path) -> None:
    """``INFERENCE_LOG=off`` serves normally and creates no log."""
    log_dir = tmp_path / "off"
    with start_server("inference-log-off", INFERENCE_LOG_DIR=str(log_dir),
                      INFERENCE_LOG="off") as url:
        _send(url, bento["records"][:2])
        metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert not log_dir.exists()
    assert "model_inference_log_dropped_total 0.0" in metrics


def test_an_unwritable_log_folder_costs_the_log_not_the_service(start_server: Callable, bento: dict,
                                                                tmp_path: Path) -> None:
    """A log folder that cannot be created: ready, answering, and the fault is on /metrics."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with start_server("inference-log-unwritable", INFERENCE_LOG_DIR=str(blocker / "log")) as url:
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        response = requests.post(f"{url}/predict", json={"records": bento["records"][:2]}, timeout=30)
        assert response.status_code == 200, response.text
        metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert "model_inference_log_unwritable 1.0" in metrics
