"""Raw-socket HTTP for bodies ``requests`` cannot send sanely: huge, streamed or never sent.

``requests`` writes a whole body before it reads the answer, so against a server that answers
413 early and closes, it reports a broken pipe instead of the 413. :func:`stream_post` sends the
head, then body chunks only while no answer has arrived, and returns what was answered, how many
body bytes went out and how long it took.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    """Status, parsed JSON body, body bytes sent and seconds taken."""

    status: int
    body: dict
    sent: int
    seconds: float


def stream_post(url: str, chunks: Iterable[bytes], content_length: int | None = None,
                path: str = "/predict", timeout: float = 15.0) -> RawAnswer:
    """POST ``chunks`` to ``url + path``: chunked, or with a declared ``content_length``."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
                "Content-Type: application/json", "Connection: close"]
        head.append(f"Content-Length: {content_length}" if content_length is not None
                    else "Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = _send_until_answered(sock, chunks, chunked=content_length is None)
        raw = read_all(sock)
    seconds = time.monotonic() - started
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        body = _unchunk(body)
    return RawAnswer(status, json.loads(body), sent, seconds)


def _send_until_answered(sock: socket.socket, chunks: Iterable[bytes], chunked: bool) -> int:
    """Send body chunks until the server answers or hangs up; return body bytes sent."""
    sent = 0
    try:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                return sent  # the server has answered already
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def _unchunk(body: bytes) -> bytes:
    """Decode a chunked transfer-encoded body."""
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)
