"""A corpus of bad requests against a real server: each gets a small 4xx naming what was wrong.

Nothing a client sends may produce a 5xx, echo its input into the answer, or hurt the service:
after the corpus, a good request is still answered correctly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import numpy as np
import pytest
import requests

from mlops_template.core.features import build_features
from tests.support.http import stream_post
from tests.support.servers import MAX_BODY_BYTES, MAX_RECORDS

JSON = {"Content-Type": "application/json"}
SQL = "Private'; DROP TABLE predictions; --"
SCRIPT = "<script>alert('x')</script>"


def _with(record: dict, **change: object) -> dict:
    """The record with fields changed (a value of ``...`` deletes the field)."""
    out = {**record, **change}
    return {k: v for k, v in out.items() if v is not ...}


def _raw_with(record: dict, field: str, literal: str) -> str:
    """A body whose ``field`` holds a raw JSON-ish literal (NaN, Infinity) json.dumps won't write."""
    body = json.dumps({"records": [_with(record, **{field: "@@"})]})
    return body.replace('"@@"', literal)


# (id, body builder from a good record, record index and field the error must name)
JSON_CASES: list[tuple[str, Callable[[dict], object], int | None, str | None]] = [
    ("null-not-allowed", lambda r: {"records": [_with(r, age=None)]}, 0, "age"),
    ("string-for-number", lambda r: {"records": [_with(r, age="40")]}, 0, "age"),
    ("bool-for-number", lambda r: {"records": [_with(r, age=True)]}, 0, "age"),
    ("out-of-range", lambda r: {"records": [_with(r, age=500)]}, 0, "age"),
    ("unknown-category", lambda r: {"records": [_with(r, sex="Unknown")]}, 0, "sex"),
    ("missing-field", lambda r: {"records": [_with(r, relationship=...)]}, 0, "relationship"),
    ("unused-field-invalid", lambda r: {"records": [_with(r, education="Kindergarten")]}, 0, "education"),
    ("extra-field", lambda r: {"records": [_with(r, shoe_size=42)]}, 0, "shoe_size"),
    ("extra-top-level", lambda r: {"records": [r], "debug": True}, None, "debug"),
    ("empty-list", lambda r: {"records": []}, None, "records"),
    ("no-records-key", lambda r: {}, None, "records"),
    ("records-not-list", lambda r: {"records": r}, None, "records"),
    ("record-not-object", lambda r: {"records": [1]}, 0, None),
    ("top-level-list", lambda r: [r], None, None),
    ("sql-injection", lambda r: {"records": [_with(r, workclass=SQL)]}, 0, "workclass"),
    ("script-injection", lambda r: {"records": [_with(r, occupation=SCRIPT)]}, 0, "occupation"),
]

RAW_CASES: list[tuple[str, Callable[[dict], bytes], dict, int, str, str]] = [
    ("nan", lambda r: _raw_with(r, "age", "NaN").encode(), JSON, 400, "validation", "age"),
    ("infinity", lambda r: _raw_with(r, "capital_gain", "Infinity").encode(), JSON, 400,
     "validation", "capital_gain"),
    ("minus-infinity", lambda r: _raw_with(r, "hours_per_week", "-Infinity").encode(), JSON,
     400, "validation", "hours_per_week"),
    ("invalid-utf8", lambda r: b'{"records": [{"sex": "\xff\xfe"}]}', JSON, 400,
     "malformed_json", "UTF-8"),
    ("not-json", lambda r: b'{"records": [', JSON, 400, "malformed_json", "JSON"),
    ("deeply-nested", lambda r: b"[" * 100_000 + b"]" * 100_000, JSON, 400, "malformed_json",
     "nested"),
    ("deeply-nested-records", lambda r: b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     JSON, 400, "malformed_json", "nested"),
    ("huge-integer", lambda r: _raw_with(r, "age", "9" * 5000).encode(), JSON, 400,
     "malformed_json", "digits"),
    ("text-plain", lambda r: json.dumps({"records": [r]}).encode(),
     {"Content-Type": "text/plain"}, 415, "content_type", "application/json"),
    ("form", lambda r: b"records=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "content_type", "application/json"),
    ("no-content-type", lambda r: json.dumps({"records": [r]}).encode(), {}, 415,
     "content_type", "application/json"),
    ("latin1-charset", lambda r: json.dumps({"records": [r]}).encode(),
     {"Content-Type": "application/json; charset=latin-1"}, 415, "content_type", "UTF-8"),
]


def _check(response: requests.Response, status: int, error: str, text: str) -> dict:
    """The answer has the status, is compact JSON with our error code, and mentions ``text``."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert text in response.text
    return body


@pytest.mark.parametrize("name, build, record, field", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_json_body(server: str, bento: dict, name: str, build: Callable,
                       record: int | None, field: str | None) -> None:
    """Each invalid body is refused with 400 and a detail naming the record and field."""
    response = requests.post(f"{server}/predict", json=build(bento["records"][0]), timeout=10)
    body = _check(response, 400, "validation", field or "")
    assert any(d["record"] == record and d["field"] == field for d in body["details"]), body
    assert SQL not in response.text and SCRIPT not in response.text


@pytest.mark.parametrize("name, build, headers, status, error, text", RAW_CASES,
                         ids=[c[0] for c in RAW_CASES])
def test_bad_raw_body(server: str, bento: dict, name: str, build: Callable, headers: dict,
                      status: int, error: str, text: str) -> None:
    """Bodies that are not valid JSON, or not declared as JSON, are refused with 400/415."""
    response = requests.post(f"{server}/predict", data=build(bento["records"][0]),
                             headers=headers, timeout=10)
    _check(response, status, error, text)


def test_errors_name_each_record(server: str, bento: dict) -> None:
    """Several bad records: every error names its record index and field."""
    good = bento["records"][0]
    records = [good, _with(good, age="x"), good, _with(good, race="Martian", sex=None)]
    response = requests.post(f"{server}/predict", json={"records": records}, timeout=10)
    body = _check(response, 400, "validation", "race")
    found = {(d["record"], d["field"]) for d in body["details"]}
    assert found == {(1, "age"), (3, "race"), (3, "sex")}
    assert next(d for d in body["details"] if d["field"] == "sex")["message"] == "may not be null"


def test_too_many_records(server: str, bento: dict) -> None:
    """MAX_RECORDS + 1 real records: 400 saying the limit; MAX_RECORDS records are scored."""
    records = list(itertools.islice(itertools.cycle(bento["records"]), MAX_RECORDS + 1))
    response = requests.post(f"{server}/predict", json={"records": records}, timeout=30)
    _check(response, 400, "too_many_records", str(MAX_RECORDS))
    ok = requests.post(f"{server}/predict", json={"records": records[:-1]}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()) == MAX_RECORDS


def _ten_million_records() -> object:
    """About 30 MB of ``{},{},...``: ten million records, generated lazily in 64 kB pieces."""
    yield b'{"records": ['
    piece = b"{}," * 21_845
    for _ in range(10_000_000 // 21_845):
        yield piece
    yield b"{}]}"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_ten_million_records(server: str, declared: bool) -> None:
    """Ten million records are refused with 413 at the body limit, quickly, without reading them."""
    answer = stream_post(server, _ten_million_records(),
                         content_length=30_000_020 if declared else None)
    assert answer.status == 413 and answer.body["error"] == "body_too_large", answer
    assert answer.seconds < 5
    assert answer.sent <= 16 * MAX_BODY_BYTES  # what socket buffers took before the answer


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_hundred_megabyte_body(server: str, declared: bool) -> None:
    """A 100 MB body gets 413 after at most a few MB were sent, in well under the time to send it."""
    total = 100 * (1 << 20)
    chunks = (b" " * (1 << 16) for _ in range(total >> 16))
    answer = stream_post(server, chunks, content_length=total if declared else None)
    assert answer.status == 413 and answer.body["error"] == "body_too_large", answer
    assert answer.seconds < 5
    assert answer.sent <= 16 * MAX_BODY_BYTES  # what socket buffers took before the answer


def test_still_healthy_after_the_corpus(server: str, bento: dict) -> None:
    """After all of the above, a good request is scored exactly as the offline pipeline does."""
    test = bento["test"].iloc[:20]
    response = requests.post(f"{server}/predict", json={"records": bento["records"][:20]},
                             timeout=10)
    assert response.status_code == 200, response.text
    expected = bento["pipeline"].predict_proba(build_features(test, bento["spec"]))[:, 1]
    served = np.array([p["probability"] for p in response.json()])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
    assert requests.get(f"{server}/readyz", timeout=5).status_code == 200
