"""The service's own API-key check: an ASGI middleware in front of everything but the probes.

With ``API_KEYS_FILE`` set, every request except ``/livez``, ``/healthz`` and ``/readyz`` (the
probes of an orchestrator, which carry no data) must send ``Authorization: Bearer <key>`` with a
key whose SHA-256 is in the file (:mod:`mlops_template.core.apikeys`, the same file the front
checks). That includes ``/metrics``: Prometheus scrapes with a key of its own. A request without
a valid key gets 401 ``{"error": "unauthorized", "request_id", "message"}`` with
``WWW-Authenticate: Bearer`` and the guard's request-id headers, is counted in
``model_unauthorized_requests_total{reason}`` and never reaches the request guard, so it costs
no body read and no concurrency slot. An admitted request carries its key's name in the request
state (``api_key_name``): the canary's routing key.

The file is re-read whenever its modification time, size or inode changes, so a key created or
revoked with ``python -m mlops_template apikeys`` applies to the next request, without a restart.
A file that is missing, unreadable, malformed or empty admits nobody (fails closed) and says why
in the log, once per change.

Without ``API_KEYS_FILE`` the service is open, and the first line each worker logs says so.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from mlops_template.core.apikeys import KeyFileError, bearer_token, load_keys, verify
from mlops_template.serving.asgi import Receive, Scope, Send, client_request_id, send_json
from mlops_template.serving.guard import GuardRuntime

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz"})
KEY_NAME_STATE = "api_key_name"  # where an admitted request's key name is kept (request state)
REFUSAL_LOG_INTERVAL_S = 10.0
UNAUTHORIZED_MESSAGE = "a valid API key is required: send the header 'Authorization: Bearer <key>'"


class KeyRing:
    """The key file's entries (digest -> name), re-read when the file changes; None when unusable."""

    def __init__(self, path: Path) -> None:
        """Read ``path`` now; a file that cannot be used is logged and admits nobody."""
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._keys: dict[str, str] | None = None
        self._problem: str | None = None
        self.current()

    def current(self) -> dict[str, str] | None:
        """The keys as the file holds them now (re-read if it changed), or None if it is unusable."""
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError as exc:
            self._unusable(f"key file {self.path} cannot be read ({type(exc).__name__}: {exc})")
            return None
        if signature != self._signature:
            self._signature = signature
            try:
                self._keys = load_keys(self.path)
            except KeyFileError as exc:
                self._unusable(str(exc))
                return None
            logger.info("API keys required: %d key(s) loaded from %s", len(self._keys), self.path)
            self._problem = None
        return self._keys

    def _unusable(self, problem: str) -> None:
        """Forget the keys (fail closed) and log the problem once, until it changes."""
        self._keys = None
        if problem != self._problem:
            logger.error("%s: every request except the probes is refused with 401 until it is fixed", problem)
            self._problem = problem


class ApiKeyAuth:
    """ASGI middleware admitting only requests with a key from ``keys_file`` (see module doc).

    With ``keys_file`` None it passes every request through, and logs loudly that it does.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], keys_file: Path | None, runtime: GuardRuntime) -> None:
        """Wrap ``app``; ``runtime`` gives the metrics once the service instance exists."""
        self.app = app
        self.runtime = runtime
        self.keys = KeyRing(keys_file) if keys_file is not None else None
        self.refused = 0
        self.last_logged = float("-inf")
        if self.keys is None:
            logger.warning("OPEN SERVICE: API_KEYS_FILE is not set, so every client is served without a "
                           "key (/predict and /metrics included). Set API_KEYS_FILE for anything but a laptop.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the probes and authenticated requests on; answer the others 401."""
        if self.keys is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        reason, name = self._check(scope)
        if name is None:
            await self._refuse(scope, send, reason)
            return
        scope.setdefault("state", {})[KEY_NAME_STATE] = name
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> tuple[str, str | None]:
        """``(refusal reason, None)`` or ``("", key name)`` for one request."""
        keys = self.keys.current() if self.keys is not None else None
        if keys is None:
            return "key_file_unusable", None
        values = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
        token = bearer_token(values[0].decode("latin-1")) if len(values) == 1 else None
        if token is None:
            return "missing_key", None
        name = verify(token, keys)
        return ("", name) if name is not None else ("unknown_key", None)

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        """Answer 401 like the guard's errors; count it; log a summary at most every few seconds."""
        request_id = uuid.uuid4().hex
        metrics = self.runtime.metrics
        if metrics is not None:
            metrics.unauthorized.labels(reason).inc()
        self.refused += 1
        now = time.monotonic()
        if now - self.last_logged >= REFUSAL_LOG_INTERVAL_S:
            logger.info("refused %d request(s) with 401 since the last report (latest %s: %s)",
                        self.refused, request_id, reason)
            self.refused, self.last_logged = 0, now
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        echoed = [(b"www-authenticate", b'Bearer realm="model-service"'), (b"x-request-id", request_id.encode())]
        client_id = client_request_id(headers)
        if client_id is not None:
            echoed.append((b"x-client-request-id", client_id.encode()))
        await send_json(send, 401, {"error": "unauthorized", "request_id": request_id,
                                     "message": UNAUTHORIZED_MESSAGE}, echoed)

