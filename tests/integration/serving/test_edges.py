"""The request edge an attacker or a broken client reaches first: headers twice, keys twice,
bodies that never finish, and slow bodies that used to hold every concurrency slot.

Raw sockets, because ``requests`` cannot send a repeated header or an unfinished body.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

BODY_TIMEOUT = 1.0


def raw_request(url: str, head: list[str], body: bytes = b"", timeout: float = 15.0) -> tuple[int, dict, dict]:
    """Send ``head`` lines and ``body`` as they are; return status, headers and the JSON answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        lines = ["POST /predict HTTP/1.1", f"Host: {parts.netloc}", "Connection: close", *head]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
    if headers.get("transfer-encoding") == "chunked":
        size, _, rest = payload.partition(b"\r\n")
        payload = rest[: int(size, 16)]
    try:
        answer = json.loads(payload or b"{}")
    except json.JSONDecodeError:  # refused by the HTTP layer (h11) before the service saw it
        answer = {"text": payload.decode("latin-1")}
    return int(status_line.split(" ")[1]), headers, answer


@pytest.fixture(scope="module")
def edge_server(start_server):
    with start_server("edges", BODY_TIMEOUT=str(BODY_TIMEOUT), MAX_CONCURRENCY="4") as url:
        yield url


@pytest.fixture(scope="module")
def good_body(bento) -> bytes:
    return json.dumps({"records": [bento["records"][0]]}).encode()


@pytest.mark.parametrize("first", ["multipart/form-data; boundary=x", "text/plain"])
def test_a_repeated_content_type_is_refused(edge_server, good_body, first):
    status, headers, answer = raw_request(edge_server, [f"Content-Type: {first}", "Content-Type: application/json",
                                                        f"Content-Length: {len(good_body)}"], good_body)
    assert status == 400 and answer["error"] == "duplicate_header", answer
    assert "content-type" in answer["message"] and headers["x-request-id"]


def test_a_repeated_content_length_is_refused(edge_server, good_body):
    """uvicorn's HTTP parser refuses it before the service: request smuggling needs two lengths."""
    length = f"Content-Length: {len(good_body)}"
    status, _, answer = raw_request(edge_server, ["Content-Type: application/json", length, length], good_body)
    assert status == 400, answer


def test_a_key_given_twice_is_refused(edge_server, bento):
    record = json.dumps(bento["records"][0])
    body = ('{"records": [' + record[:-1] + ', "age": 999, "age": 39}]}').encode()
    status, _, answer = raw_request(edge_server, ["Content-Type: application/json", f"Content-Length: {len(body)}"],
                                    body)
    assert status == 400 and answer["error"] == "malformed_json" and "'age'" in answer["message"], answer


@pytest.mark.parametrize("framing", ["short", "chunked"])
def test_a_body_that_never_finishes_gets_408_with_a_request_id(edge_server, good_body, framing):
    if framing == "short":  # declares more than it sends, then waits
        head, body = ["Content-Type: application/json", f"Content-Length: {len(good_body) + 100}"], good_body
    else:  # one chunk, never the terminating zero-length one
        head = ["Content-Type: application/json", "Transfer-Encoding: chunked"]
        body = f"{len(good_body):x}\r\n".encode() + good_body + b"\r\n"
    started = time.monotonic()
    status, headers, answer = raw_request(edge_server, head, body)
    assert status == 408 and answer["error"] == "body_timeout", answer
    assert headers["x-request-id"] == answer["request_id"]
    assert time.monotonic() - started < BODY_TIMEOUT + 5  # the deadline, not the 10 s request timeout
    metrics = requests.get(f"{edge_server}/metrics", timeout=10).text
    assert 'model_rejected_requests_total{reason="body_timeout"}' in metrics


def test_slow_bodies_hold_no_concurrency_slot(edge_server, good_body):
    """Twice MAX_CONCURRENCY clients trickling bodies, while a normal client is answered 200."""
    parts = urlsplit(edge_server)
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: 100000\r\n\r\n".encode())
            while not stop.wait(0.2):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return  # answered 408 and closed

    slow = [threading.Thread(target=trickle, daemon=True) for _ in range(8)]
    for thread in slow:
        thread.start()
    time.sleep(0.5)
    try:
        answers = [requests.post(f"{edge_server}/predict", data=good_body, timeout=10,
                                 headers={"Content-Type": "application/json"}).status_code for _ in range(20)]
    finally:
        stop.set()
        for thread in slow:
            thread.join(timeout=10)
    assert answers == [200] * 20, answers
