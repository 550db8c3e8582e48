"""Who gets in at the front, and the front's edges: API keys, the path allow-list, per-key caps,
the client's routing key, request ids, 413 at once and TLS, through the real HAProxy of
``deploy/haproxy/haproxy.cfg`` before the session's real ``bentoml serve`` replica (or a stdlib
stand-in where what the replica receives must be seen, or a slow one is needed).

Keys are written as the front reads them (``<sha256 hex> <name>`` lines), once by the project's own
command (``python -m mlops_template apikeys create``). Skipped when haproxy is not installed.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.front import Front, haproxy_binary, haproxy_front, stand_in_replica, write_key
from tests.support.http import read_all
from tests.support.servers import REPO
from tests.support.waiting import poll

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (apt-get install haproxy)")

REQUEST_TIMEOUT = 5.0  # FRONT_REQUEST_TIMEOUT of the shared front: what a 413 must not wait for
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]


@pytest.fixture(scope="module")
def front(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """The front before the session's server, with its own key file and a 5 s request timeout."""
    with haproxy_front([server], tmp_path_factory.mktemp("front-keys"),
                       FRONT_REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT:g}s") as running:
        yield running


@pytest.fixture(scope="module")
def body(bento: dict) -> bytes:
    """Two real records as a /predict body."""
    return json.dumps({"records": bento["records"][:2]}).encode()


def passed_on(front: Front) -> float:
    """Requests the front has passed to its replicas so far."""
    return front.metric("haproxy_backend_http_requests_total", proxy="replicas")


def front_error(answer: requests.Response, status: int, error: str) -> str:
    """Check an answer the front made itself (status, JSON, source, request id); return its id."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"] == error and answer.json()["source"] == "front", answer.text
    assert UUID.match(answer.headers.get("X-Request-ID", "")), answer.headers
    return answer.headers["X-Request-ID"]


def exchange(front: Front, head: list[str], timeout: float = 15.0) -> tuple[int, dict[str, str], dict, float]:
    """Send a raw request head (``Connection: close`` added), no body; status, headers, JSON, seconds."""
    parts = urlsplit(front.url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join([*head, "Host: front", "Connection: close"]) + "\r\n\r\n").encode())
        raw = read_all(sock)
    seconds = time.monotonic() - started
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, json.loads(payload), seconds


def post(front: Front, source: str, auth: dict[str, str], timeout: float = 30.0) -> tuple[int, dict, dict, float]:
    """POST /predict ``{}`` from loopback address ``source`` with ``auth``: status, headers, JSON, seconds."""
    parts = urlsplit(front.url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout,
                                            source_address=(source, 0))
    try:
        connection.request("POST", "/predict", body=b"{}", headers={"Content-Type": "application/json", **auth})
        answer = connection.getresponse()
        payload = answer.read()
        headers = {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()
    return answer.status, headers, json.loads(payload), time.monotonic() - started


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


# 1. who gets in -------------------------------------------------------------------------------

def test_predict_needs_one_valid_bearer_key(front: Front, body: bytes) -> None:
    """No key, a wrong one, a malformed header or two headers: 401 (JSON, WWW-Authenticate) and
    nothing reaches the replica; the valid key: 200 with the scores."""
    before = passed_on(front)
    refused = {
        "no header": {},
        "wrong key": bearer("test_not-a-key-of-this-front"),
        "the key with a suffix": bearer(front.key + "x"),
        "another scheme": {"Authorization": "Basic " + base64.b64encode(f"u:{front.key}".encode()).decode()},
        "no scheme": {"Authorization": front.key},
        "a word after the key": {"Authorization": f"Bearer {front.key} extra"},
        "two spaces": {"Authorization": f"Bearer  {front.key}"},
        "a comma": {"Authorization": f"Bearer {front.key},x"},
    }
    for case, headers in refused.items():
        answer = requests.post(f"{front.url}/predict", data=body, timeout=30,
                               headers={"Content-Type": "application/json", **headers})
        front_error(answer, 401, "unauthorized")
        assert answer.headers["WWW-Authenticate"] == "Bearer", case
    for first, second in ((front.key, "test_wrong"), ("test_wrong", front.key)):  # which one would count?
        status, headers, answer, _ = exchange(front, ["GET /docs.json HTTP/1.1", f"Authorization: Bearer {first}",
                                                      f"Authorization: Bearer {second}"])
        assert status == 401 and answer["error"] == "unauthorized" and headers["www-authenticate"] == "Bearer"
    assert passed_on(front) == before
    for scheme in ("Bearer", "bearer"):
        answer = requests.post(f"{front.url}/predict", data=body, timeout=30,
                               headers={"Content-Type": "application/json", "Authorization": f"{scheme} {front.key}"})
        assert answer.status_code == 200 and len(answer.json()) == 2, answer.text


def test_only_the_allowed_paths_are_served(front: Front, server: str) -> None:
    """/livez and /readyz without a key (the front's own: a replica's reasons stay on the replica),
    /docs.json with one; /metrics (which the replica has), / and any other path: 404 from the front."""
    before = passed_on(front)
    for path, field in (("/livez", "alive"), ("/readyz", "ready")):
        answer = requests.get(f"{front.url}{path}", timeout=10)
        assert answer.status_code == 200 and answer.json() == {field: True, "source": "front"}, answer.text
    assert passed_on(front) == before
    front_error(requests.get(f"{front.url}/docs.json", timeout=10), 401, "unauthorized")
    docs = requests.get(f"{front.url}/docs.json", headers=front.auth, timeout=10)
    assert docs.status_code == 200 and "/predict" in docs.json()["paths"]
    assert requests.get(f"{server}/metrics", timeout=10).status_code == 200  # what the front hides
    for path in ("/metrics", "/metrics/", "/", "/predict/", "/%70redict", "//predict", "/docs", "/static_content/x",
                 "/metrics?x=/predict", "/predict/../metrics"):
        for auth in ([], [f"Authorization: {front.auth['Authorization']}"]):
            status, headers, answer, _ = exchange(front, [f"GET {path} HTTP/1.1", *auth])  # sent as written
            assert (status, answer["error"], answer["source"]) == (404, "not_found", "front"), (path, answer)
            assert UUID.match(headers["x-request-id"])
    front_error(requests.post(f"{front.url}/metrics", headers=front.auth, timeout=10), 404, "not_found")


def test_a_key_made_by_the_projects_command_gets_in(tmp_path: Path) -> None:
    """``python -m mlops_template apikeys create`` prints a key that the front admits; a near miss is 401."""
    keys = tmp_path / "api-keys"
    made = subprocess.run([sys.executable, "-m", "mlops_template", "apikeys", "create", "ci-client",
                           "--file", str(keys)], cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    key = made.stdout.strip()
    assert key and key not in keys.read_text()
    with stand_in_replica() as replica, \
            haproxy_front([replica.url], tmp_path, FRONT_API_KEYS_FILE=str(keys)) as running:
        assert post(running, SOURCES[0], bearer(key))[0] == 200
        assert post(running, SOURCES[0], bearer(key[:-1]))[0] == 401
        log = access_log_with(running, "ci-client")  # the access log names the key, never shows it
    assert replica.requests == 1
    assert "ci-client" in log and key not in log


def test_the_front_is_closed_by_default(tmp_path: Path) -> None:
    """No key file, or one without keys: every request needing a key is 401; /readyz still answers."""
    empty = tmp_path / "empty-keys"
    empty.write_text("# no keys yet\n\n")
    logs = []
    with stand_in_replica() as replica:
        for settings in ({"api_keys": False}, {"FRONT_API_KEYS_FILE": str(empty)}):
            with haproxy_front([replica.url], tmp_path, **settings) as running:
                for auth in ({}, bearer("test_anything"), bearer("")):
                    assert post(running, SOURCES[0], auth)[0] == 401, (settings, auth)
                assert requests.get(f"{running.url}/readyz", timeout=10).status_code == 200
            logs.append(running.log.read_text())
        assert replica.requests == 0
    assert "FRONT_API_KEYS_FILE is not set" in logs[0]  # said at start, where operators look


def access_log_with(running: Front, text: str, timeout: float = 10) -> str:
    """The front's log once it holds ``text`` (or after ``timeout``): HAProxy writes a request's
    access-log line when it is done with the request, a moment after the client has its answer."""
    return poll(lambda: running.log.read_text(errors="replace"), lambda log: text in log, timeout)


# 2. per-key caps ------------------------------------------------------------------------------

def test_a_key_over_its_in_flight_cap_gets_429_from_any_address(tmp_path: Path) -> None:
    """Six requests at once with one key, from six addresses: beyond FRONT_MAX_INFLIGHT_PER_KEY, 429
    at once (JSON, Retry-After, request id); another key from the same addresses is served."""
    keys = tmp_path / "keys"
    alice, bob = write_key(keys, "alice"), write_key(keys, "bob")
    with stand_in_replica(delay=0.8) as replica, haproxy_front(
            [replica.url], tmp_path, FRONT_API_KEYS_FILE=str(keys), FRONT_MAX_INFLIGHT_PER_KEY="2") as running, \
            ThreadPoolExecutor(8) as pool:
        heavy = [pool.submit(post, running, source, bearer(alice)) for source in SOURCES[:6]]
        time.sleep(0.3)
        assert post(running, SOURCES[0], bearer(bob))[0] == 200
        answers = [future.result() for future in heavy]
    statuses = [status for status, *_ in answers]
    assert set(statuses) == {200, 429} and statuses.count(200) <= 2, statuses
    for status, headers, answer, seconds in answers:
        if status == 429:
            assert answer["error"] == "too_many_requests" and "key" in answer["message"], answer
            assert headers["retry-after"] == "1" and UUID.match(headers["x-request-id"]), headers
            assert seconds < 0.6, seconds


def test_a_key_over_its_request_rate_gets_429(tmp_path: Path) -> None:
    """FRONT_MAX_RATE_PER_KEY requests per 10 s with one key, spread over addresses, then 429
    (Retry-After 1) for that key only."""
    keys = tmp_path / "keys"
    alice, bob = write_key(keys, "alice"), write_key(keys, "bob")
    with stand_in_replica() as replica, haproxy_front([replica.url], tmp_path, FRONT_API_KEYS_FILE=str(keys),
                                                      FRONT_MAX_RATE_PER_KEY="5") as running:
        answers = [post(running, SOURCES[n % len(SOURCES)], bearer(alice)) for n in range(8)]
        assert post(running, SOURCES[0], bearer(bob))[0] == 200
    assert [status for status, *_ in answers] == [200] * 5 + [429] * 3
    for _, headers, answer, _ in answers[5:]:
        assert answer["error"] == "rate_limited" and headers["retry-after"] == "1", (headers, answer)
        assert UUID.match(headers["x-request-id"])
    assert replica.requests == 6


# 3. what reaches the replica, and the front's own answers -------------------------------------

def test_the_replica_gets_the_fronts_request_id_and_no_client_routing_key(tmp_path: Path) -> None:
    """A client's X-Routing-Key never reaches the replica and its X-Request-ID is replaced by the
    front's id, which the answer and the access log carry too."""
    with stand_in_replica() as replica, haproxy_front([replica.url], tmp_path) as running:
        answer = requests.post(f"{running.url}/predict", json={}, timeout=10, headers={
            **running.auth, "X-Routing-Key": "pick-the-challenger", "X-Request-ID": "client-chosen"})
        assert answer.status_code == 200
        seen = replica.headers_seen[-1]
        assert "x-routing-key" not in seen, seen
        assert UUID.match(seen["x-request-id"]) and seen["x-request-id"] == answer.headers["X-Request-ID"]
        assert seen["authorization"] == running.auth["Authorization"]  # the service checks it again
        assert seen["x-request-id"] in access_log_with(running, seen["x-request-id"])


def test_every_answer_the_front_makes_carries_its_request_id(tmp_path: Path) -> None:
    """401, 404, 413, 429, 408, 503 and /readyz made by the front: each with its own request id, also logged."""
    ids = []
    with stand_in_replica() as replica, haproxy_front([replica.url], tmp_path, FRONT_MAX_RATE_PER_KEY="1",
                                                      FRONT_REQUEST_TIMEOUT="1s", FRONT_CHECK_INTER="300ms") as running:
        ids.append(front_error(requests.post(f"{running.url}/predict", json={}, timeout=10), 401, "unauthorized"))
        ids.append(front_error(requests.get(f"{running.url}/metrics", timeout=10), 404, "not_found"))
        status, headers, answer, _ = exchange(running, ["POST /predict HTTP/1.1", "Content-Length: 2000000",
                                                        f"Authorization: {running.auth['Authorization']}"])
        assert (status, answer["error"]) == (413, "payload_too_large")
        ids.append(headers["x-request-id"])
        status, headers, answer, _ = exchange(running, ["POST /predict HTTP/1.1", "Content-Length: 20",
                                                        f"Authorization: {running.auth['Authorization']}"])
        assert (status, answer["error"]) == (408, "request_timeout")  # the body never came
        ids.append(headers["x-request-id"])
        replica.ready.clear()
        poll(lambda: running.servers_up()["replica1"], lambda up: not up, 5, 0.1)
        ids.append(front_error(requests.post(f"{running.url}/predict", json={}, headers=running.auth, timeout=10),
                               503, "unavailable"))
        not_ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
        ids.append(not_ready.headers["X-Request-ID"])
        ids.append(front_error(requests.post(f"{running.url}/predict", json={}, headers=running.auth, timeout=10),
                               429, "rate_limited"))
        missing = poll(lambda: [i for i in ids if i not in running.log.read_text()], lambda missing: not missing, 10)
    assert all(UUID.match(found) for found in ids) and len(set(ids)) == len(ids), ids
    assert not missing, f"request ids not in the access log: {missing}\n{running.log.read_text()[-3000:]}"


def test_a_declared_body_over_the_limit_is_413_at_once(front: Front, server: str) -> None:
    """Content-Length over FRONT_MAX_BODY_BYTES, no body sent: 413 (JSON, request id) well within
    the 5 s request timeout, nothing passed on; the service's own limit is the same 1 MiB."""
    before = passed_on(front)
    for declared in (2 << 20, (1 << 20) + 1, (1 << 32) + 100, 10**15):  # 2^32 + 100: 100 as a 32-bit int
        status, headers, answer, seconds = exchange(front, [
            "POST /predict HTTP/1.1", "Content-Type: application/json", f"Content-Length: {declared}",
            f"Authorization: {front.auth['Authorization']}"])
        assert (status, answer["error"], answer["source"]) == (413, "payload_too_large", "front"), answer
        assert UUID.match(headers["x-request-id"]) and seconds < 1.0, (headers, seconds)
    assert passed_on(front) == before
    status, _, answer, _ = exchange(front, ["POST /predict HTTP/1.1", f"Content-Length: {(1 << 20) + 1}"])
    assert status == 401  # without a key, still refused before anything is read
    direct = requests.post(f"{server}/predict", data=b" " * ((1 << 20) + 1), timeout=30,
                           headers={"Content-Type": "application/json"})
    assert direct.status_code == 413  # the front's limit is the service's


# 4. TLS ---------------------------------------------------------------------------------------

def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert+key PEM, cert PEM)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    bundle = directory / "front.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    return bundle, cert


def test_tls_with_a_self_signed_certificate(server: str, body: bytes, tmp_path: Path) -> None:
    """FRONT_TLS_CERT: https with a valid key 200 (certificate verified), without one 401; plain
    HTTP on that port gets no HTTP answer."""
    bundle, cert = self_signed(tmp_path)
    with haproxy_front([server], tmp_path, FRONT_TLS_CERT=str(bundle)) as running:
        assert running.url.startswith("https://")
        answer = requests.post(f"{running.url}/predict", data=body, verify=str(cert), timeout=30,
                               headers={"Content-Type": "application/json", **running.auth})
        assert answer.status_code == 200 and len(answer.json()) == 2, answer.text
        front_error(requests.post(f"{running.url}/predict", data=body, verify=str(cert), timeout=30), 401,
                    "unauthorized")
        plain = running.url.replace("https://", "http://")
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{plain}/predict", data=body, headers=running.auth, timeout=10)
