"""A local HTTP receiver standing in for Slack and the Pushgateway: it records every request."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server standing in for Slack and the Pushgateway; records every request.

    Set ``fail_next`` to answer that many requests with ``fail_status`` before succeeding.
    """

    url: str
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500

    def posts(self, path_prefix: str = "/hook") -> list[Received]:
        return [r for r in self.requests if r.method == "POST" and r.path.startswith(path_prefix)]


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    """A running receiver on a free loopback port; stopped on exit."""
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state.requests.append(Received(self.command, self.path, dict(self.headers), body))
                failing = state.fail_next > 0
                state.fail_next -= int(failing)
            self.send_response(state.fail_status if failing else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_PUT = _handle

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


