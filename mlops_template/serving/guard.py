"""The ASGI middleware in front of ``/predict``: every client mistake becomes a small 4xx answer.

BentoML parses and validates a request only once it has read the whole body, has no body size
limit, answers overload with a 429 from a middleware placed outside the service's own ones (so
those answers cannot be counted here), and logs a client's validation error as an ERROR with a
traceback. This guard runs before the endpoint and, for ``POST /predict``:

1. refuses a repeated ``Content-Type`` or ``Content-Length`` header (400: two layers could read
   different ones), a wrong ``Content-Type`` (415) and a declared ``Content-Length`` over the
   limit (413) before reading anything;
2. reads the body while counting bytes (413 as soon as a chunked body passes the limit) within
   ``body_timeout_s`` (408: a body shorter than its ``Content-Length``, a chunked body never
   ended, or a client sending a byte a second), before taking a concurrency slot, so slow
   clients never hold the slots that scoring needs;
3. answers 503 when the model is not ready (the message says why) or the worker already holds
   ``max_concurrency`` requests, so excess load is shed fast instead of queueing;
4. parses it as strict UTF-8 JSON (400 on invalid UTF-8, bad JSON, absurd nesting, a key given
   twice in one object), refuses more than ``max_records`` records (400), and validates it with
   the contract's request model (400 naming each record index and field; ``NaN``/``Infinity``
   fail as non-finite numbers);
5. passes the already-read body on to BentoML, and replaces any 5xx answer with a body that
   carries the request id and no internals;
6. abandons an answer the client does not read: every write of the response must complete
   within ``send_timeout_s`` (the worker's write buffer drains only as fast as the client reads,
   so a client that pipelines requests and never reads would otherwise hold a concurrency slot
   for ever). The slot is freed, the connection is left to uvicorn, and
   ``model_response_write_timeouts_total`` counts it.

Request ids: every request gets a new random id from the service, answered in ``X-Request-ID``,
logged, and written to the inference log as ``request_id``, the key ground truth joins on, so it
is unique even when clients reuse theirs. A client's own ``X-Request-ID``, when it is a sane token
(``[A-Za-z0-9._:-]{1,64}``), is never used as the id: it is echoed back in
``X-Client-Request-ID`` and kept in the inference log as ``client_request_id``, for the client's
own correlation. Every outcome is counted in :mod:`mlops_template.serving.metrics`.

``GET /readyz`` is BentoML's: while the service is not ready, its 503 answer is replaced with
``{"ready": false, "reason": ...}`` naming the cause (which model, and why it is not serving).

The body checks of step 4 are in :mod:`~mlops_template.serving.request_checks`; the log filters
that keep client text from forging log lines are in :mod:`~mlops_template.serving.log_filters`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from mlops_template.serving.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    SendTimeout,
    client_request_id,
    send_json,
    with_deadline,
    with_headers,
)
from mlops_template.serving.metrics import ServiceMetrics
from mlops_template.serving.request_checks import Rejection, error_detail, parse_json

logger = logging.getLogger(__name__)

SHED_LOG_INTERVAL_S = 10.0
READYZ_PATH = "/readyz"
# The ``error`` codes of the guard's JSON answers, by status (published in the OpenAPI document).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("validation", "too_many_records", "malformed_json", "duplicate_header"),
    408: ("body_timeout",),
    413: ("body_too_large",),
    415: ("content_type",),
    500: ("internal",),
    503: ("not_ready", "overload", "unavailable"),
}


@dataclass(frozen=True)
class GuardSettings:
    """Limits and behaviour of the guard, read from the environment by the service."""

    path: str
    request_model: type[BaseModel]
    max_body_bytes: int
    max_records: int
    max_concurrency: int
    log_payloads: bool = False
    max_error_details: int = 100
    body_timeout_s: float = 5.0
    send_timeout_s: float = 10.0


@dataclass
class GuardRuntime:
    """What the service instance hands the guard once its ``__init__`` has run."""

    metrics: ServiceMetrics | None = None
    is_ready: Callable[[], bool] = field(default=lambda: False)
    not_ready_reason: Callable[[], str | None] = field(default=lambda: "the service has not started")
    # What a ready ``/readyz`` adds as JSON (e.g. ``routing_refused``); empty: BentoML's answer as is.
    readiness_detail: Callable[[], dict[str, Any]] = field(default=dict)


class RequestGuard:
    """ASGI middleware enforcing :class:`GuardSettings` on the predict route (see module doc)."""

    def __init__(self, app: Callable[..., Awaitable[None]], settings: GuardSettings,
                 runtime: GuardRuntime) -> None:
        """Wrap ``app``; ``runtime`` is filled in later by the service instance."""
        self.app = app
        self.settings = settings
        self.runtime = runtime
        self.in_flight = 0
        self.shed_log = ShedLog(SHED_LOG_INTERVAL_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard ``POST`` on the predict path, explain a failed ``/readyz``; pass the rest through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == READYZ_PATH and scope["method"] in ("GET", "HEAD"):
            await self._readyz(scope, receive, with_headers(send, [(b"x-request-id", uuid.uuid4().hex.encode())]))
        elif scope["path"] != self.settings.path or scope["method"] != "POST":
            # every answer carries an id of the service's, probes and /metrics included
            await self.app(scope, receive, with_headers(send, [(b"x-request-id", uuid.uuid4().hex.encode())]))
        else:
            request_id = uuid.uuid4().hex
            try:
                await self._guard(scope, receive, with_deadline(send, self.settings.send_timeout_s), request_id)
            except SendTimeout:
                self._abandoned(request_id)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """Checks 1 to 5 of the module doc for one ``POST`` on the predict path."""
        names = [k.decode("latin-1").lower() for k, _ in scope["headers"]]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client_id = client_request_id(headers)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        echoed = [(b"x-request-id", request_id.encode())]
        if client_id is not None:
            state["client_request_id"] = client_id
            echoed.append((b"x-client-request-id", client_id.encode()))
        send = with_headers(send, echoed)
        try:
            for name in ("content-type", "content-length"):
                if names.count(name) > 1:
                    raise Rejection(400, "duplicate_header", f"the {name} header is given {names.count(name)} times")
            self._check_headers(headers)
            body = await self._read_body(receive)
            if body is None:
                return  # the client went away
            self._check_capacity()
        except Rejection as rejection:
            await self._reject(rejection, request_id, send)
            return
        self.in_flight += 1
        try:
            await self._admitted(scope, body, receive, send, request_id)
        finally:
            self.in_flight -= 1

    def _check_headers(self, headers: dict[str, str]) -> None:
        """415 unless the body is declared as UTF-8 JSON; 413 on a declared oversize body."""
        media_type, _, params = headers.get("content-type", "").partition(";")
        charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.IGNORECASE)
        if media_type.strip().lower() != "application/json" or (
                charset and charset.group(1).lower() not in ("utf-8", "utf8")):
            raise Rejection(415, "content_type",
                            "Content-Type must be application/json (UTF-8)")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise Rejection(400, "malformed_json", "Content-Length is not a number")
            if int(declared) > self.settings.max_body_bytes:
                raise Rejection(413, "body_too_large", self._too_large_message())

    def _check_capacity(self) -> None:
        """503 when the model is not loaded (saying why) or this worker is at its concurrency limit."""
        if not self.runtime.is_ready():
            reason = self.runtime.not_ready_reason()
            raise Rejection(503, "not_ready", f"the model is not ready: {reason}" if reason
                            else "the model is not ready")
        if self.in_flight >= self.settings.max_concurrency:
            raise Rejection(503, "overload", "the service is at capacity; retry shortly")

    async def _admitted(self, scope: Scope, body: bytes, receive: Receive, send: Send,
                        request_id: str) -> None:
        """Parse and validate the body, then let BentoML score it."""
        try:
            records = self._validate(parse_json(body))
        except Rejection as rejection:
            await self._reject(rejection, request_id, send)
            return
        if self.settings.log_payloads:
            logger.info("request %s payload: %s", request_id, body.decode("utf-8"))
        status = await self._forward(scope, body, receive, send, request_id)
        if self.runtime.metrics is not None:
            self.runtime.metrics.finished(_outcome(status))
        logger.debug("request %s: %d records, status %d", request_id, records, status)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body within the deadline (else 408), or 413 as soon as it passes the limit.

        None when the client disconnects.
        """
        deadline = time.monotonic() + self.settings.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise Rejection(408, "body_timeout", f"the body did not arrive within "
                                                     f"{self.settings.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise Rejection(413, "body_too_large", self._too_large_message())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _validate(self, payload: Any) -> int:
        """Check the record count, then every record against the contract; return the count."""
        records = payload.get("records") if isinstance(payload, dict) else None
        count = len(records) if isinstance(records, list) else 0
        if count > self.settings.max_records:
            # 400, not 413: the published schema's maxItems makes it a validation error.
            raise Rejection(400, "too_many_records",
                            f"{count} records sent, at most {self.settings.max_records} allowed "
                            "per request", records=count)
        try:
            self.settings.request_model.model_validate(payload)
        except ValidationError as exc:
            details = [error_detail(error) for error in exc.errors(include_context=False,
                                                              include_url=False)]
            raise Rejection(400, "validation", f"{len(details)} invalid value(s)", records=count,
                            details=details[: self.settings.max_error_details]) from None
        return count

    async def _forward(self, scope: Scope, body: bytes, receive: Receive, send: Send,
                       request_id: str) -> int:
        """Run BentoML's endpoint on the buffered body; return the status it answered."""
        replayed = False
        status = 500
        started = False
        error_status: int | None = None

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            nonlocal status, started, error_status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 500:
                    error_status = status  # answered below, without BentoML's body
                    return
                started = True
            elif error_status is not None:
                return
            await send(message)

        try:
            await self.app(scope, replay, capture)
        except SendTimeout:
            raise  # the client is not reading: nothing more can be sent
        except Exception:  # an error BentoML did not turn into a response
            logger.exception("request %s: unhandled error", request_id)
            status = error_status = 500
        if error_status is not None and not started:
            await send_json(send, error_status, {
                "error": "internal" if error_status != 503 else "unavailable",
                "request_id": request_id,
                "message": "the request could not be scored; quote the request id to report it",
            })
        return status

    async def _reject(self, rejection: Rejection, request_id: str, send: Send) -> None:
        """Answer a refused request, count it, and log it: one line each, overload in a summary."""
        if self.runtime.metrics is not None:
            self.runtime.metrics.rejected(rejection.reason, rejection.records)
        if rejection.reason == "overload":
            self.shed_log.shed(request_id)
        else:
            level = logging.WARNING if rejection.status >= 500 else logging.INFO
            logger.log(level, "request %s rejected (%d %s): %s", request_id, rejection.status,
                       rejection.reason, rejection.message)
        body: dict[str, Any] = {"error": rejection.reason, "request_id": request_id,
                                "message": rejection.message}
        if rejection.details is not None:
            body["details"] = rejection.details
        headers = [(b"retry-after", b"1")] if rejection.status == 503 else []
        await send_json(send, rejection.status, body, headers)

    def _too_large_message(self) -> str:
        return f"request body exceeds {self.settings.max_body_bytes} bytes"

    def _abandoned(self, request_id: str) -> None:
        """Count and log an answer abandoned because the client did not read it."""
        if self.runtime.metrics is not None:
            self.runtime.metrics.write_timeouts.inc()
        logger.warning("request %s: the client did not read its answer within %g s; answer abandoned",
                       request_id, self.settings.send_timeout_s)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's ``/readyz``, its 503 answer replaced by one that says why; a 200 answer becomes
        ``{"ready": true, ...}`` with the service's readiness detail when it has any (a refused
        routing document: still ready, serving what it had)."""
        status: int | None = None
        detail: dict[str, Any] = {}

        async def capture(message: Message) -> None:
            nonlocal status, detail
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    detail = self.runtime.readiness_detail()
            if status != 503 and not detail:
                await send(message)

        await self.app(scope, receive, capture)
        if status == 503:
            reason = self.runtime.not_ready_reason() or "the service reports that it is not ready"
            await send_json(send, 503, {"ready": False, "reason": reason})
        elif detail:
            await send_json(send, 200, {"ready": True, **detail})


class ShedLog:
    """Logs load shedding at most once per interval, with a count, instead of once per request.

    Under overload a worker sheds hundreds of requests a second; a line for each would flood
    the logs and cost the event loop time it needs for the admitted requests.
    """

    def __init__(self, interval_s: float) -> None:
        """Write at most one line per ``interval_s`` seconds."""
        self.interval_s = interval_s
        self.pending = 0
        self.last_logged = float("-inf")

    def shed(self, request_id: str) -> None:
        """Count one shed request; log the count when the interval has passed."""
        self.pending += 1
        now = time.monotonic()
        if now - self.last_logged >= self.interval_s:
            logger.warning("overload: shed %d request(s) with 503 since the last report "
                           "(latest %s)", self.pending, request_id)
            self.pending, self.last_logged = 0, now


def _outcome(status: int) -> str:
    """Metrics outcome of a request that reached the endpoint."""
    if status < 400:
        return "success"
    if status == 503:
        return "unavailable"
    return "rejected" if status < 500 else "error"
