"""The production front: the real HAProxy of ``deploy/haproxy/haproxy.cfg`` before real replicas.

A real ``bentoml serve`` (the session's ``server``, plus one more replica for the fail-over test)
behind a real ``haproxy``; a stdlib stand-in replica where a slow backend is needed. Clients bind
loopback source addresses (127.0.0.2 the heavy client, 127.0.0.3 the probe) to be told apart, and
send the API key of the front they talk to (``front.auth``). Skipped when haproxy is not installed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.front import Front, haproxy_binary, haproxy_front, stand_in_replica
from tests.support.http import RawAnswer, read_all
from tests.support.waiting import poll

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (apt-get install haproxy)")

REQUEST_TIMEOUT = 2.0  # FRONT_REQUEST_TIMEOUT of the shared front
CONN_PER_CLIENT = 6
HEAVY, PROBE = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def front(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """The front before the session's server, with a short request timeout and a small per-client cap."""
    with haproxy_front([server], tmp_path_factory.mktemp("front"), FRONT_REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT:g}s",
                       FRONT_MAX_CONN_PER_CLIENT=str(CONN_PER_CLIENT)) as running:
        yield running


@pytest.fixture(scope="module")
def body(bento: dict) -> bytes:
    return json.dumps({"records": bento["records"][:2]}).encode()


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def post_from(front: Front, source: str, body: bytes = b"{}", timeout: float = 30.0,
              auth: dict[str, str] | None = None) -> tuple[int, dict, object, float]:
    """POST /predict to ``front`` from the loopback address ``source`` with its key (or ``auth``):
    status, headers, JSON answer, seconds."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(*address(front.url), timeout=timeout, source_address=(source, 0))
    try:
        connection.request("POST", "/predict", body=body,
                           headers={"Content-Type": "application/json", **(front.auth if auth is None else auth)})
        answer = connection.getresponse()
        payload = answer.read()
        headers = {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()
    return answer.status, headers, json.loads(payload), time.monotonic() - started


def keyed_stream_post(front: Front, chunks: Iterator[bytes], content_length: int,
                      timeout: float = 15.0) -> RawAnswer:
    """POST /predict with the front's key and a declared ``content_length``, sending ``chunks`` only
    until the front answers: status, JSON answer, body bytes sent, seconds."""
    started, sent = time.monotonic(), 0
    with socket.create_connection(address(front.url), timeout=timeout) as sock:
        head = ["POST /predict HTTP/1.1", "Host: front", "Content-Type: application/json", "Connection: close",
                f"Content-Length: {content_length}", *(f"{k}: {v}" for k, v in front.auth.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, payload = answer_of(sock)
    return RawAnswer(status, json.loads(payload), sent, time.monotonic() - started)


def answer_of(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of what the front sends until it closes the connection."""
    head, _, payload = read_all(sock).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def predict_requests(front: Front) -> float:
    """Requests HAProxy has passed to its replicas so far."""
    return front.metric("haproxy_backend_http_requests_total", proxy="replicas")


def service_predictions(url: str) -> float:
    """The service's own count of /predict requests, whatever their outcome."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines()
               if line.startswith("model_requests_total{"))


# 1. the happy path ----------------------------------------------------------------------------

def test_predict_and_readyz_pass_through(front: Front, server: str, body: bytes) -> None:
    """The front answers what the replica answers (the scores, the replica's X-Request-ID); /readyz too."""
    direct = requests.post(f"{server}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    via = requests.post(f"{front.url}/predict", data=body, headers={"Content-Type": "application/json", **front.auth},
                        timeout=30)
    assert via.status_code == 200, via.text
    assert via.json() == direct.json() and len(via.json()) == 2
    assert via.headers["X-Request-ID"] and via.headers["X-Request-ID"] != direct.headers["X-Request-ID"]
    assert requests.get(f"{front.url}/readyz", timeout=10).status_code == 200
    invalid = requests.post(f"{front.url}/predict", json={"records": [{"age": "old"}]}, headers=front.auth, timeout=30)
    assert invalid.status_code == 400 and "request_id" in invalid.json(), invalid.text  # the service's own answer


# 2. slow clients ------------------------------------------------------------------------------

def test_slow_headers_get_408_from_the_front(front: Front) -> None:
    """Headers trickled a byte at a time are cut off at FRONT_REQUEST_TIMEOUT."""
    head = b"POST /predict HTTP/1.1\r\nHost: front\r\nX-Slow: " + b"a" * 100
    started = time.monotonic()
    with socket.create_connection(address(front.url), timeout=15) as sock:
        for byte in head:
            if select.select([sock], [], [], 0.5)[0]:
                break
            sock.sendall(bytes([byte]))
        status, _ = answer_of(sock)
    assert status == 408
    assert REQUEST_TIMEOUT - 0.5 < time.monotonic() - started < REQUEST_TIMEOUT + 3


def test_slow_body_gets_408_and_never_reaches_a_replica(front: Front, server: str) -> None:
    """Content-Length 100000, then a byte every 0.5 s: 408 (JSON) from the front, nothing passed on."""
    passed, scored = predict_requests(front), service_predictions(server)

    def trickle() -> Iterator[bytes]:
        for _ in range(100_000):
            time.sleep(0.5)
            yield b" "

    answer = keyed_stream_post(front, trickle(), content_length=100_000)
    assert answer.status == 408 and answer.body["error"] == "request_timeout", answer
    assert answer.body["source"] == "front"
    assert REQUEST_TIMEOUT - 0.5 < answer.seconds < REQUEST_TIMEOUT + 3, answer
    assert answer.sent < 20
    assert predict_requests(front) == passed
    assert service_predictions(server) == scored


# 3. oversized heads ---------------------------------------------------------------------------

def _stream_header(front: Front, total: int, chunk: int = 1 << 16) -> tuple[int, int, float]:
    """Send one header line of up to ``total`` bytes, stopping once answered: status, bytes sent, seconds."""
    sent, started = 0, time.monotonic()
    with socket.create_connection(address(front.url), timeout=15) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: front\r\nX-Big: ")
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"a" * chunk)
                sent += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _ = answer_of(sock)
    return status, sent, time.monotonic() - started


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_huge_headers_are_refused_fast_with_bounded_memory(front: Front) -> None:
    """1 MiB and 128 MiB header lines: 400 at once, after a small part was sent; HAProxy's memory flat."""
    before = _rss_kib(front.process.pid)
    for size in (1 << 20, 128 << 20):
        status, sent, seconds = _stream_header(front, size)
        assert status == 400, (size, status)
        assert seconds < 3 and sent < 16 << 20, (size, sent, seconds)
    assert _rss_kib(front.process.pid) - before < 50_000
    assert requests.get(f"{front.url}/readyz", timeout=10).status_code == 200


def test_too_many_or_too_large_headers_are_refused(front: Front) -> None:
    """Over FRONT_MAX_HEADERS lines or FRONT_MAX_HEADER_BYTES: JSON 431; over 256 lines: HAProxy's 400."""
    for headers in ({f"X-Extra-{i}": "v" for i in range(200)}, {"X-Large": "a" * 10_000}):
        answer = requests.get(f"{front.url}/readyz", headers=headers, timeout=10)
        assert answer.status_code == 431, answer.text
        assert answer.json()["error"] == "headers_too_large" and answer.json()["source"] == "front"
    assert requests.get(f"{front.url}/readyz", headers={f"X-Extra-{i}": "v" for i in range(300)},
                        timeout=10).status_code == 400
    assert requests.get(f"{front.url}/readyz", headers={f"X-Extra-{i}": "v" for i in range(50)},
                        timeout=10).status_code == 200


# 4. per-client connection cap -----------------------------------------------------------------

def _refused(sock: socket.socket) -> bool:
    """Whether the front closed a fresh, idle connection at once."""
    if not select.select([sock], [], [], 0.3)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_one_client_cannot_take_every_connection(front: Front, body: bytes) -> None:
    """Idle connections from 127.0.0.2 are refused beyond the cap; 127.0.0.3 is still served."""
    opened: list[socket.socket] = []
    try:
        for _ in range(CONN_PER_CLIENT + 3):
            sock = socket.socket()
            sock.bind((HEAVY, 0))
            sock.connect(address(front.url))
            if _refused(sock):
                sock.close()
                break
            opened.append(sock)
        assert len(opened) == CONN_PER_CLIENT
        status, _, answer, _ = post_from(front, PROBE, body)
        assert status == 200 and len(answer) == 2, answer
    finally:
        for sock in opened:
            sock.close()
    time.sleep(0.3)  # the front sees the closes
    assert post_from(front, HEAVY, body)[0] == 200


# 5. the bounded queue -------------------------------------------------------------------------

def test_full_queue_is_a_fast_503_and_a_stale_wait_a_503(tmp_path: Path) -> None:
    """One slot, two queue places: a burst is refused at once (JSON, Retry-After), the queue times out."""
    with stand_in_replica(delay=1.5) as replica, haproxy_front(
            [replica.url], tmp_path, FRONT_REPLICA_MAXCONN="1", FRONT_MAX_QUEUE="2", FRONT_MAX_QUEUE_HEAVY="2",
            FRONT_QUEUE_TIMEOUT="500ms") as running:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post_from(running, HEAVY), range(8)))
        statuses = [status for status, *_ in answers]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 1, statuses
        refused = [(headers, body, seconds) for status, headers, body, seconds in answers if status == 503]
        assert all(headers["retry-after"] == "1" and headers["content-type"] == "application/json"
                   for headers, _, _ in refused), refused
        full = [seconds for _, body, seconds in refused if body["error"] == "queue_full"]
        stale = [seconds for _, body, seconds in refused if body["error"] == "unavailable"]
        assert full and max(full) < 1.0, refused
        assert stale and all(0.4 < seconds < 1.4 for seconds in stale), refused
        assert replica.requests == statuses.count(200)


def test_a_client_over_its_in_flight_cap_gets_429(tmp_path: Path) -> None:
    """Beyond FRONT_MAX_INFLIGHT_PER_CLIENT requests in flight a source gets 429 at once; others do not."""
    with stand_in_replica(delay=0.6) as replica, haproxy_front(
            [replica.url], tmp_path, FRONT_REPLICA_MAXCONN="4", FRONT_MAX_INFLIGHT_PER_CLIENT="2") as running, \
            ThreadPoolExecutor(8) as pool:
        heavy = [pool.submit(post_from, running, HEAVY) for _ in range(6)]
        time.sleep(0.2)
        assert post_from(running, PROBE)[0] == 200
        answers = [future.result() for future in heavy]
    statuses = [status for status, *_ in answers]
    assert set(statuses) == {200, 429} and statuses.count(200) <= 2, statuses
    for status, headers, body, seconds in answers:
        if status == 429:
            assert body["error"] == "too_many_requests" and headers["retry-after"] == "1", body
            assert seconds < 0.5, seconds


def test_a_light_client_jumps_the_queue_of_a_heavy_one(tmp_path: Path) -> None:
    """127.0.0.2 queues six requests on one slot; 127.0.0.3's one is served next, not seventh."""
    with stand_in_replica(delay=0.4) as replica, haproxy_front(
            [replica.url], tmp_path, FRONT_REPLICA_MAXCONN="1", FRONT_CLIENT_FAIR_SHARE="1",
            FRONT_QUEUE_TIMEOUT="10s") as running, ThreadPoolExecutor(8) as pool:
        heavy = [pool.submit(post_from, running, HEAVY) for _ in range(6)]
        time.sleep(0.2)
        probe = post_from(running, PROBE)
        assert probe[0] == 200 and probe[2]["source"] == PROBE
        assert probe[3] < 1.5, probe  # at most the one in service and its own; without priority: ~2.4 s
        assert [future.result()[0] for future in heavy] == [200] * 6


# 6. a replica going away ----------------------------------------------------------------------

def test_a_replica_that_is_not_ready_gets_no_traffic(tmp_path: Path) -> None:
    """A replica whose /readyz turns 503 is taken out within two checks, and back in once ready."""
    with stand_in_replica(name="a") as first, stand_in_replica(name="b") as second, haproxy_front(
            [first.url, second.url], tmp_path, FRONT_CHECK_INTER="300ms") as running:
        second.ready.clear()
        poll(lambda: running.servers_up()["replica2"], lambda up: not up, 5, 0.1)
        served = [post_from(running, PROBE) for _ in range(10)]
        assert [(status, answer["replica"]) for status, _, answer, _ in served] == [(200, "a")] * 10
        second.ready.set()
        poll(lambda: running.servers_up()["replica2"], bool, 10, 0.1)
        assert {post_from(running, PROBE)[2]["replica"] for _ in range(10)} == {"a", "b"}


def test_a_stopped_replica_is_taken_out_without_failures(server: str, start_server, body: bytes,
                                                         tmp_path: Path) -> None:
    """Two real replicas, one stopped under steady traffic: every request through the front succeeds."""
    outcomes: list[int | str] = []
    stop = threading.Event()
    with contextlib.ExitStack() as second_replica:
        second = second_replica.enter_context(start_server("front-second"))
        with haproxy_front([server, second], tmp_path, FRONT_CHECK_INTER="500ms") as running:

            def traffic() -> None:
                with requests.Session() as session:
                    while not stop.is_set():
                        try:
                            outcomes.append(session.post(f"{running.url}/predict", data=body, timeout=30, headers={
                                "Content-Type": "application/json", **running.auth}).status_code)
                        except requests.RequestException as error:
                            outcomes.append(type(error).__name__)

            workers = [threading.Thread(target=traffic) for _ in range(3)]
            for worker in workers:
                worker.start()
            try:
                time.sleep(1.5)
                by_second = running.metric("haproxy_server_http_responses_total", proxy="replicas", server="replica2")
                before_stop = len(outcomes)
                second_replica.close()  # SIGTERM to the second replica, under traffic
                stopped_at = time.monotonic()
                poll(lambda: running.servers_up().get("replica2"), lambda up: not up, 10, 0.2)
                taken_out = time.monotonic() - stopped_at
                time.sleep(1.5)
            finally:
                stop.set()
                for worker in workers:
                    worker.join()
            after = running.metric("haproxy_server_http_responses_total", proxy="replicas", server="replica1")
    assert by_second > 0  # both replicas were serving
    assert taken_out < 5, taken_out
    failures = [outcome for outcome in outcomes if outcome != 200]
    assert not failures, (failures, len(outcomes))
    assert len(outcomes) > before_stop + 5 and after > 0
