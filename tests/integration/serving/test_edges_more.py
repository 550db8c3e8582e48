"""Findings of a security review of the served bento, each checked against real ``bentoml serve``.

- control characters a client puts in a request (a ``%0a`` in the path) cannot forge a line of
  the server log;
- ``/readyz`` (and ``/predict``'s 503) says why the service is not ready, and the start-up log
  names a routing file's model that fails its checksum apart from a bad routing document;
- the request id logged and joined with ground truth is the service's own, unique per request;
  a client's ``X-Request-ID`` is kept apart (``client_request_id``, ``X-Client-Request-ID``);
- the published OpenAPI document says what the guard enforces (required body, no extra fields,
  every error status with its JSON body);
- a client that never reads its answers cannot hold the worker's concurrency slots.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from mlops_template.core.contract import load_contract
from mlops_template.monitoring.quality import live_quality
from mlops_template.serving import routing
from mlops_template.serving.inference_log import read_log
from tests.support.servers import CONTRACT, MAX_RECORDS, REPO, start_bento_server, stop_server, wait_ready
from tests.support.waiting import poll, wait_until

REQUEST_TIMEOUT = 2.0  # also the deadline of a response write the client does not read
MAX_CONCURRENCY = 2
RECORDS = 1000  # MAX_RECORDS of this module's server: large answers fill a socket's buffers quickly
VALUE_MATRIX = {"tp": 1.0, "fp": -1.0, "tn": 0.0, "fn": 0.0}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edges-more-log")


@pytest.fixture(scope="module")
def more_server(start_server, log_dir: Path) -> Iterator[str]:
    with start_server("edges-more", MAX_CONCURRENCY=str(MAX_CONCURRENCY), REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
                      BODY_TIMEOUT="1", MAX_RECORDS=str(RECORDS), INFERENCE_LOG_DIR=str(log_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def server_log(bento: dict) -> Path:
    return Path(bento["root"]) / "serve-edges-more.log"


def _raw_get(url: str, target: str, head: tuple[str, ...] = ()) -> bytes:
    """``GET target`` with the request line written exactly as given; the raw answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close", *head]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return raw


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> str:
    """The log once it holds ``text`` (the access log is written after the answer)."""
    return poll(lambda: path.read_bytes().decode("utf-8", errors="replace"), lambda content: text in content,
                timeout)


FORGED = {  # percent-encoded request target -> what a forged line would start with
    "/%0a[ERROR]%20forged-by-lf": "[ERROR] forged-by-lf",
    "/%0d[ERROR]%20forged-by-cr": "[ERROR] forged-by-cr",
    "/x%0b%0c%1b[2K%7f%C2%85[ERROR]%20forged-by-nel": "[ERROR] forged-by-nel",
    "/x%E2%80%A8[ERROR]%20forged-by-ls": "[ERROR] forged-by-ls",
}


def test_control_characters_in_a_request_cannot_forge_a_log_line(more_server, server_log) -> None:
    """uvicorn percent-decodes the path; the access log writes it escaped, on one line."""
    for target in FORGED:
        assert _raw_get(more_server, target).startswith(b"HTTP/1.1 404"), target
    # a tab is the one control character the HTTP parser lets through in a header value
    raw = _raw_get(more_server, "/tabbed", ("Content-Type: text/plain;\tx=1",))
    assert raw.startswith(b"HTTP/1.1 404")
    content = _wait_for_text(server_log, "forged-by-ls")
    for forged in FORGED.values():
        assert forged in content, f"{forged!r} was never logged"
    # str.splitlines breaks on every line boundary a log viewer might honour (\x0b, \x0c, \x85, \u2028 too)
    for line in content.splitlines():
        assert "forged-by" not in line or "[entry_service:" in line, f"forged log line: {line!r}"
        assert not line.lstrip().startswith("[ERROR] forged"), f"forged log line: {line!r}"
    assert "path=/\\n[ERROR] forged-by-lf" in content
    assert "path=/\\r[ERROR] forged-by-cr" in content
    assert "\\x1b[2K" in content and "\\x85[ERROR]" in content and "\\u2028[ERROR]" in content
    assert "type=text/plain;\\tx=1" in content and "\t" not in content.split("path=/tabbed", 1)[1].split("\n")[0]


def _predict(url: str, records: list[dict], **headers: str) -> requests.Response:
    return requests.post(f"{url}/predict", json={"records": records}, headers=headers, timeout=30)


def test_request_ids_are_the_services_own_and_the_clients_is_kept_apart(more_server, bento, log_dir) -> None:
    """Two clients sending the same X-Request-ID get distinct ids; ground truth joins on those."""
    records = bento["records"][:2]
    answers = [_predict(more_server, records, **{"X-Request-ID": "order-42"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    ids = [a.headers["X-Request-ID"] for a in answers]
    assert len(set(ids)) == 2 and "order-42" not in ids, ids
    assert [a.headers["X-Client-Request-ID"] for a in answers] == ["order-42", "order-42"]
    # a refused request: the body names the service's id, the client's is echoed apart
    refused = requests.post(f"{more_server}/predict", data=b"{", timeout=10,
                            headers={"Content-Type": "application/json", "X-Request-ID": "order-42"})
    assert refused.status_code == 400
    assert refused.json()["request_id"] == refused.headers["X-Request-ID"] != "order-42"
    assert refused.headers["X-Client-Request-ID"] == "order-42"
    # an id that is not a sane token is not echoed at all
    odd = _predict(more_server, records[:1], **{"X-Request-ID": "x" * 65})
    assert odd.status_code == 200 and "X-Client-Request-ID" not in odd.headers

    frame = poll(lambda: read_log(log_dir), lambda frame: len(frame) >= 5, 10)
    ours = frame[frame["request_id"].isin(ids)]
    assert len(ours) == 4, frame[["request_id", "record_index"]]
    assert set(ours["client_request_id"]) == {"order-42"}
    assert not frame.duplicated(["request_id", "record_index"]).any()
    truth = ours[["request_id", "record_index"]].assign(label=">50K")
    quality = live_quality(frame, truth, load_contract(CONTRACT), VALUE_MATRIX)
    assert quality["labelled_records"] == 4 and quality["duplicate_log_entries"] == 0


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_published_openapi_says_what_the_guard_enforces(more_server) -> None:
    document = requests.get(f"{more_server}/docs.json", timeout=10).json()
    operation = document["paths"]["/predict"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    request_schema = _resolve(document, body["content"]["application/json"]["schema"])
    assert request_schema["additionalProperties"] is False
    assert request_schema["required"] == ["records"]
    assert _resolve(document, request_schema["properties"]["records"]["items"])["additionalProperties"] is False
    assert request_schema["properties"]["records"]["maxItems"] == RECORDS
    responses = operation["responses"]
    for status in ("400", "408", "413", "415", "500", "503", "504"):
        assert status in responses, (status, sorted(responses))
        schema = _resolve(document, responses[status]["content"]["application/json"]["schema"])
        assert schema["type"] == "object" and "error" in schema["required"], (status, schema)
        if status != "504":  # BentoML's own timeout answer carries no request id
            assert {"error", "request_id", "message"} <= set(schema["required"]), (status, schema)
            assert "X-Request-ID" in responses[status]["headers"]
    assert "validation" in _resolve(document, responses["400"]["content"]["application/json"]["schema"]
                                    )["properties"]["error"]["enum"]
    assert "X-Request-ID" in responses["200"]["headers"]
    readyz = document["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert set(_resolve(document, readyz)["required"]) == {"ready", "reason"}


def _copy_store(bento: dict, destination: Path) -> Path:
    """A private copy of the session's BentoML store, to tamper with."""
    home = destination / "bentoml"
    shutil.copytree(bento["home"], home)
    return home


ADD_TAMPERED = """
import json, sys
from pathlib import Path
import bentoml
from mlops_template.core.io import sha256_of
from mlops_template.pipeline.packaging import _serving_config, save_bento_model
model_dir, contract = Path(sys.argv[1]), Path(sys.argv[2])
serving = _serving_config(contract, 0.5, {'model_version': '99'})
tag = save_bento_model(model_dir, contract, serving, 'adult-income', {'model_version': '99'},
                       sha256_of(model_dir / 'model.skops'))
with open(Path(bentoml.models.get(tag).path) / 'model.skops', 'ab') as fh:
    fh.write(b'tampered')
print(tag)
"""


def _serve(bento: dict, home: Path, log: Path, **env: str):
    process, url = start_bento_server(bento["tag"], home, log, MAX_RECORDS=str(MAX_RECORDS),
                                      INFERENCE_LOG="off", **env)
    return process, url


def _pinned_model(home: Path, bento_tag: str) -> str:
    """The model tag the bento pins (its ``model_tag`` argument)."""
    name, version = bento_tag.split(":")
    document = yaml.safe_load((home / "bentos" / name / version / "bento.yaml").read_text(encoding="utf-8"))
    return document["args"]["model_tag"]


def test_readyz_says_why_the_service_is_not_ready(bento, tmp_path) -> None:
    home = _copy_store(bento, tmp_path)
    tag = _pinned_model(home, bento["tag"])
    name, version = tag.split(":")
    model_file = home / "models" / name / version / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    log = tmp_path / "serve-unready.log"
    process, url = _serve(bento, home, log)
    try:
        wait_ready(url, process, "/livez")
        answer = requests.get(f"{url}/readyz", timeout=10)
        assert answer.status_code == 503
        assert answer.headers["Content-Type"].startswith("application/json")
        reason = answer.json()
        assert reason["ready"] is False
        assert tag in reason["reason"] and "integrity check" in reason["reason"], reason
        refused = requests.post(f"{url}/predict", json={"records": bento["records"][:1]}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"] == "not_ready"
        assert tag in refused.json()["message"], refused.text
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert "model_ready 0.0" in metrics
    finally:
        stop_server(process)
    text = log.read_text(errors="replace")
    assert f"model {tag} failed its integrity check (sha256 mismatch)" in text, text[-3000:]


def test_startup_log_names_a_routing_model_that_fails_its_checksum(bento, tmp_path) -> None:
    home = _copy_store(bento, tmp_path)
    done = subprocess.run([sys.executable, "-c", ADD_TAMPERED, str(Path(bento["root"]) / "model"), str(CONTRACT)],
                          env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
                          cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    tampered = done.stdout.strip().splitlines()[-1]
    path = tmp_path / "routing.json"
    recorded = yaml.safe_load((home / "models" / tampered.replace(":", "/") / "model.yaml").read_text())["metadata"]
    routing.write_routing(path, routing.champion_only("adult-income", tampered, "99", 0.0, recorded["sha256"]))
    log = tmp_path / "serve-routing.log"
    process, url = _serve(bento, home, log, ROUTING_FILE=str(path), ROUTING_POLL_SECONDS="30")
    try:
        wait_ready(url, process)  # the pinned model serves
        answer = _predict(url, bento["records"][:1])
        assert answer.status_code == 200 and answer.json()[0]["model_version"] == "7"
        assert requests.get(f"{url}/metrics", timeout=10).text.count("model_ready 1.0") == 1
    finally:
        stop_server(process)
    text = log.read_text(errors="replace")
    assert f"champion model {tampered} failed its integrity check (sha256 mismatch)" in text, text[-3000:]
    assert "unusable at startup" not in text, text[-3000:]


def _sample(url: str, name: str) -> float:
    lines = [line for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines()
             if line.startswith(f"{name} ")]
    return float(lines[0].split()[1]) if lines else 0.0


def test_a_client_that_never_reads_its_answers_holds_no_slot(more_server, bento) -> None:
    """Clients pipelining requests and never reading: once the worker's socket buffers are full
    (about 3 MB of answers each here), its writes wait for ever and each client held a concurrency
    slot; every other client got 503 until they disconnected. Now a write is abandoned after
    REQUEST_TIMEOUT and the slot freed, so other clients are answered.

    Runs last in the module: the stalled connections stay open until the test closes them.
    """
    parts = urlsplit(more_server)
    body = json.dumps({"records": bento["records"][:1] * RECORDS}).encode()
    request = (f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    sockets: list[socket.socket] = []

    def never_read() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((parts.hostname, parts.port))
        sockets.append(sock)
        try:
            sock.sendall(request * 60)  # 60 answers of about 75 kB: more than the buffers hold
        except OSError:
            pass  # closed by the test

    threads = [threading.Thread(target=never_read, daemon=True) for _ in range(MAX_CONCURRENCY)]
    for thread in threads:
        thread.start()
    good = json.dumps({"records": bento["records"][:1]}).encode()
    try:
        meanwhile: list[int] = []

        def abandoned() -> bool:
            if _sample(more_server, "model_response_write_timeouts_total") >= MAX_CONCURRENCY:
                return True
            meanwhile.append(requests.post(f"{more_server}/predict", data=good, timeout=10,
                                           headers={"Content-Type": "application/json"}).status_code)
            return False

        wait_until(abandoned, 90, 0.5, "the stalled writes abandoned",
                   context=lambda: f"answers meanwhile: {meanwhile[-10:]}")
        answers = []
        for _ in range(5):
            started = time.monotonic()
            response = requests.post(f"{more_server}/predict", data=good, timeout=10,
                                     headers={"Content-Type": "application/json"})
            answers.append((response.status_code, round(time.monotonic() - started, 2)))
        assert [status for status, _ in answers] == [200] * 5, answers
        assert all(seconds < 2.0 for _, seconds in answers), answers
    finally:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in sendall
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join(timeout=10)
