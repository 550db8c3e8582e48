"""The real HAProxy front of ``deploy/haproxy/haproxy.cfg``, started for a test and always stopped.

::

    with haproxy_front(["http://127.0.0.1:3001", "http://127.0.0.1:3002"], tmp_path,
                       FRONT_REPLICA_MAXCONN="1") as front:
        requests.post(f"{front.url}/predict", json=body, headers=front.auth)
        front.metric("haproxy_backend_http_requests_total", proxy="replicas")

``backends`` become ``FRONT_REPLICA_1..8``; the front and its stats listener get free loopback
ports (``FRONT_BIND``, ``FRONT_STATS_BIND``); any other ``FRONT_*`` setting of the config can be
passed as a keyword (``FRONT_*`` variables of the test process itself are ignored, so a run does
not depend on the shell).

The front is closed by default, so each one started here gets a key file of its own
(``directory/api-keys-<port>``) holding one key, named ``test-client``: ``front.key`` is the key,
``front.auth`` the ready-made header (``requests.post(url, headers=front.auth)``), ``front.keys_file``
the file. ``api_keys=False`` starts it without a key file (every request needing a key: 401); a
``FRONT_API_KEYS_FILE=...`` keyword uses that file instead (``key``/``auth`` then empty). With
``FRONT_TLS_CERT=...`` the front speaks TLS and ``front.url`` starts with ``https://``.

HAProxy runs in the foreground (``-db``), its access log and alerts go
to ``front.log``. The context manager returns once the front answers and every replica has passed a
health check (``wait_up=False``: once the front answers).

:func:`stand_in_replica` is a tiny stdlib HTTP server that answers ``/readyz`` and holds each
``POST /predict`` for ``delay`` seconds: a slow replica without starting BentoML.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.support.servers import REPO, free_port, start_process, stop_server, wait_for

# TEST_HAPROXY_CONFIG: another config (with errors/ beside it), to watch a test fail without a line of it.
CONFIG = Path(os.environ.get("TEST_HAPROXY_CONFIG") or REPO / "deploy" / "haproxy" / "haproxy.cfg")
MAX_REPLICAS = 8  # FRONT_REPLICA_1..8 in the config
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
KEY_NAME = "test-client"  # the name of the key each front started here gets


def haproxy_binary() -> str | None:
    """Path of the ``haproxy`` executable, or None when it is not installed."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)


@dataclass
class Front:
    """A running front: its URLs, log file, process, the ``FRONT_*`` settings it runs with, and its
    API key (``key``; ``auth`` is ``{"Authorization": "Bearer <key>"}``; both empty without one)."""

    url: str
    stats_url: str
    metrics_url: str
    log: Path
    process: subprocess.Popen
    env: dict[str, str]
    key: str = ""
    auth: dict[str, str] = field(default_factory=dict)
    keys_file: Path | None = None

    @property
    def port(self) -> int:
        """The port the front listens on (its ``url``'s)."""
        return urlsplit(self.url).port

    def metrics(self) -> str:
        """HAProxy's Prometheus exposition text."""
        return requests.get(self.metrics_url, timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = SAMPLE.match(line)
            if match is None or match["name"] != name:
                continue
            found = dict(LABEL.findall(match["labels"] or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match["value"])
        return total

    def servers_up(self) -> dict[str, bool]:
        """Each replica's server name and whether HAProxy currently counts it as UP."""
        states: dict[str, bool] = {}
        for line in self.metrics().splitlines():
            match = SAMPLE.match(line)
            if match is None or match["name"] != "haproxy_server_status":
                continue
            found = dict(LABEL.findall(match["labels"] or ""))
            if found.get("proxy") == "replicas" and found.get("state") == "UP":
                states[found["server"]] = float(match["value"]) == 1.0
        return states


def write_key(path: Path, name: str, key: str | None = None) -> str:
    """Append ``<sha256 of key> <name>`` to the key file ``path`` (the front's format); return the key
    (a new random one unless ``key`` is given)."""
    key = key or f"test_{secrets.token_urlsafe(32)}"
    with path.open("a", encoding="utf-8") as out:
        out.write(f"{hashlib.sha256(key.encode()).hexdigest()} {name}\n")
    return key


@contextlib.contextmanager
def haproxy_front(backends: list[str], directory: Path, wait_up: bool = True,
                  timeout: float = 30.0, api_keys: bool = True, config: Path = CONFIG, **env: str) -> Iterator[Front]:
    """Run ``haproxy -db -f deploy/haproxy/haproxy.cfg`` (or ``config``, its errors/ beside it) in front
    of ``backends`` (URLs such as ``http://127.0.0.1:3001``) with ``env`` added; yield a
    :class:`Front`; always stop it.

    Unless ``api_keys`` is false or ``env`` names ``FRONT_API_KEYS_FILE``, the front gets a new key
    file with one key (``Front.key``, ``Front.auth``): the production front admits no one without."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
    if not 1 <= len(backends) <= MAX_REPLICAS:
        raise ValueError(f"between 1 and {MAX_REPLICAS} backends, got {len(backends)}")
    port, stats_port = free_port(), free_port()
    settings = {"FRONT_BIND": f"127.0.0.1:{port}", "FRONT_STATS_BIND": f"127.0.0.1:{stats_port}"}
    for index, backend in enumerate(backends, start=1):
        settings[f"FRONT_REPLICA_{index}"] = urlsplit(backend).netloc or backend
    directory.mkdir(parents=True, exist_ok=True)
    key, keys_file = "", None
    if api_keys and "FRONT_API_KEYS_FILE" not in env:
        keys_file = directory / f"api-keys-{port}"
        keys_file.write_text("# made by tests/support/front.py\n", encoding="utf-8")
        key = write_key(keys_file, KEY_NAME)
        settings["FRONT_API_KEYS_FILE"] = str(keys_file)
    settings.update(env)
    log = directory / f"haproxy-{port}.log"
    process = start_process([binary, "-db", "-f", str(config)], log, env=settings, drop=("FRONT_",))
    scheme = "https" if settings.get("FRONT_TLS_CERT") else "http"
    front = Front(f"{scheme}://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats",
                  f"http://127.0.0.1:{stats_port}/metrics", log, process, settings, key,
                  {"Authorization": f"Bearer {key}"} if key else {}, keys_file)
    try:
        wait_for(lambda: requests.get(front.metrics_url, timeout=2).status_code == 200, process, log,
                 "haproxy", timeout)
        if wait_up:
            wait_for(lambda: (up := front.servers_up()) and len(up) == len(backends) and all(up.values()),
                     process, log, "haproxy's replicas (UP)", timeout)
        yield front
    finally:
        stop_server(process)


class _StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StandInServer

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        ready = self.path == "/readyz" and self.server.ready.is_set()
        self._answer(200 if ready else 503, {"ready": ready})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
            self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        time.sleep(self.server.delay)
        self._answer(200, {"replica": self.server.name, "source": self.headers.get("X-Forwarded-For")})

    def _answer(self, status: int, body: dict) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass


class _StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _StandIn)
        self.delay, self.name = delay, name
        self.ready = threading.Event()
        self.ready.set()
        self.lock = threading.Lock()
        self.requests = 0  # POSTs received
        self.headers_seen: list[dict[str, str]] = []  # each POST's headers (names lowercase)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks hang up without reading everything: not news

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def stand_in_replica(delay: float = 0.0, name: str = "stand-in") -> Iterator[_StandInServer]:
    """A stdlib replica: ``GET /readyz`` 200 (503 once ``.ready.clear()``), ``POST /predict`` held
    ``delay`` s, then 200 ``{"replica": name, "source": X-Forwarded-For}``; ``.requests`` counts POSTs,
    ``.headers_seen`` keeps each POST's headers as received."""
    server = _StandInServer(delay, name)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
