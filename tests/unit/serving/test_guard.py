"""The request guard in process, on a stub ASGI app: request ids, readiness reasons, log escaping,
abandoned writes, and the OpenAPI completion of the predict operation."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from mlops_template.serving import guard as request_guard
from mlops_template.serving import log_filters
from mlops_template.serving.guard import ERROR_CODES, GuardRuntime, GuardSettings, RequestGuard
from mlops_template.serving.log_filters import ControlCharacterFilter, escape_control, install_log_filter
from mlops_template.serving.schema import document_predict, document_readyz

GOOD = json.dumps({"records": [{"x": 1}]}).encode()


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, int]]


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class StubMetrics:
    """What the guard counts with, without Prometheus."""

    def __init__(self) -> None:
        self.write_timeouts = Counter()
        self.events: list[tuple[str, Any]] = []

    def rejected(self, reason: str, records: int = 0) -> None:
        self.events.append(("rejected", reason))

    def finished(self, outcome: str) -> None:
        self.events.append(("finished", outcome))


def _settings(**change: Any) -> GuardSettings:
    return GuardSettings(**{"path": "/predict", "request_model": Request, "max_body_bytes": 10_000,
                            "max_records": 10, "max_concurrency": 1, "send_timeout_s": 0.2, **change})


async def _ok_app(scope, receive, send) -> None:
    """A stub endpoint: reads the body and answers 200 with the records it saw."""
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _call(guard: RequestGuard, body: bytes = GOOD, path: str = "/predict", method: str = "POST",
          headers: dict[str, str] | None = None, send=None) -> tuple[list[dict], dict]:
    """Run one request through the guard; return the messages sent and the scope."""
    given = {"content-type": "application/json", **(headers or {})}
    scope = {"type": "http", "path": path, "method": method,
             "headers": [(k.encode(), v.encode()) for k, v in given.items()]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def collect(message: dict) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send or collect))
    return sent, scope


def _headers(messages: list[dict]) -> dict[str, str]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return {k.decode(): v.decode() for k, v in start["headers"]}


def _status(messages: list[dict]) -> int:
    return next(m for m in messages if m["type"] == "http.response.start")["status"]


def _json(messages: list[dict]) -> dict:
    return json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))


def test_the_request_id_is_the_services_own_and_the_clients_is_kept_apart() -> None:
    guard = RequestGuard(_ok_app, _settings(), GuardRuntime(is_ready=lambda: True))
    answers = [_call(guard, headers={"x-request-id": "order-42"}) for _ in range(2)]
    ids = [_headers(sent)["x-request-id"] for sent, _ in answers]
    assert len(set(ids)) == 2 and "order-42" not in ids
    for (sent, scope), request_id in zip(answers, ids, strict=True):
        assert _headers(sent)["x-client-request-id"] == "order-42"
        assert scope["state"] == {"request_id": request_id, "client_request_id": "order-42"}
    sent, scope = _call(guard, headers={"x-request-id": "has space"})  # not a sane token: dropped
    assert "x-client-request-id" not in _headers(sent) and "client_request_id" not in scope["state"]
    refused, _ = _call(guard, body=b"{", headers={"x-request-id": "order-42"})
    assert _status(refused) == 400
    assert _json(refused)["request_id"] == _headers(refused)["x-request-id"] != "order-42"
    assert _headers(refused)["x-client-request-id"] == "order-42"


def test_not_ready_says_why_on_predict_and_readyz() -> None:
    async def bentoml_readyz(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Service is not ready because ...", "more_body": False})

    reason = "model adult-income:abc failed its integrity check (sha256 mismatch)"
    runtime = GuardRuntime(is_ready=lambda: False, not_ready_reason=lambda: reason)
    guard = RequestGuard(bentoml_readyz, _settings(), runtime)
    sent, _ = _call(guard, path="/readyz", method="GET", body=b"")
    assert _status(sent) == 503 and _json(sent) == {"ready": False, "reason": reason}
    assert _headers(sent)["content-type"] == "application/json"
    refused, _ = _call(guard)
    assert _status(refused) == 503 and _json(refused)["error"] == "not_ready"
    assert _json(refused)["message"] == f"the model is not ready: {reason}"


def test_a_ready_readyz_passes_through_untouched() -> None:
    async def ready(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"\n", "more_body": False})

    sent, _ = _call(RequestGuard(ready, _settings(), GuardRuntime(is_ready=lambda: True)),
                    path="/readyz", method="GET", body=b"")
    assert _status(sent) == 200 and sent[-1]["body"] == b"\n"


@pytest.mark.parametrize(("path", "method"), [("/readyz", "GET"), ("/livez", "GET"), ("/metrics", "GET"),
                                              ("/predict", "GET")])
def test_every_answer_carries_a_request_id(path: str, method: str) -> None:
    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    guard = RequestGuard(app, _settings(), GuardRuntime(is_ready=lambda: True))
    ids = {_headers(_call(guard, path=path, method=method, body=b"")[0])["x-request-id"] for _ in range(2)}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


def test_an_answer_the_client_never_reads_frees_the_slot(caplog) -> None:
    """uvicorn's send waits for the client to read; the guard gives up after send_timeout_s."""
    metrics = StubMetrics()
    guard = RequestGuard(_ok_app, _settings(), GuardRuntime(metrics=metrics, is_ready=lambda: True))
    stalled = asyncio.Event()

    async def never_drains(message: dict) -> None:
        await stalled.wait()  # never set

    with caplog.at_level(logging.WARNING, logger=request_guard.__name__):
        _call(guard, send=never_drains)
    assert guard.in_flight == 0
    assert metrics.write_timeouts.value == 1
    assert any("did not read its answer" in r.getMessage() for r in caplog.records)
    sent, _ = _call(guard)  # the one slot is free again
    assert _status(sent) == 200


def test_escape_control_leaves_one_line() -> None:
    text = "/\n[ERROR] a\rb\tc\x1b[2K\x7f\x85\u2028\u2029d é €"
    escaped = escape_control(text)
    assert escaped == "/\\n[ERROR] a\\rb\\tc\\x1b[2K\\x7f\\x85\\u2028\\u2029d é €"
    assert len(escaped.splitlines()) == 1


def test_the_log_filter_escapes_arguments_and_messages(monkeypatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [*root.handlers, handler])
    before = {name: list(logging.getLogger(name).filters) for name in log_filters.ESCAPED_LOGGERS}
    try:
        install_log_filter()
        install_log_filter()  # once only
        assert sum(isinstance(f, ControlCharacterFilter) for f in handler.filters) == 1
        access = logging.getLogger("bentoml.access")
        assert sum(isinstance(f, ControlCharacterFilter) for f in access.filters) == 1
        child = logging.getLogger("mlops_template.serving.guard.test")
        child.warning("request %s payload: %s", "r1", '{"records":\n[ ]}\r\n[ERROR] forged')
        child.warning("plain %d%%", 5)
    finally:
        for name, filters in before.items():
            logging.getLogger(name).filters[:] = filters
    lines = stream.getvalue().splitlines()
    assert lines == ['WARNING request r1 payload: {"records":\\n[ ]}\\r\\n[ERROR] forged', "WARNING plain 5%"]


def test_the_log_filter_keeps_a_record_it_cannot_format() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("not a number",), None)
    assert ControlCharacterFilter().filter(record) and record.args == ("not a number",)


def _bentoml_operation() -> tuple[dict, dict]:
    """The shape of the operation and components BentoML 1.4 publishes for /predict."""
    input_schema = {"type": "object", "title": "Input", "required": ["records"],
                    "properties": {"records": {"type": "array", "maxItems": 10,
                                               "items": {"$ref": "#/components/schemas/Record"}}}}
    operation = {
        "requestBody": {"content": {"application/json": {"schema": dict(input_schema)}}},
        "responses": {"200": {"description": "Successful Response", "content": {"application/json": {}}},
                      "400": {}, "404": {}, "500": {}},
    }
    return operation, {"predict__Input": {**input_schema, "title": "predict__Input"}, "Record": {}}


def test_document_predict_publishes_what_the_guard_enforces() -> None:
    operation, schemas = _bentoml_operation()
    document_predict(operation, schemas, ERROR_CODES, "predict__Input")
    assert operation["requestBody"]["required"] is True
    assert operation["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"] is False
    assert schemas["predict__Input"]["additionalProperties"] is False
    assert sorted(operation["responses"]) == ["200", "400", "408", "413", "415", "500", "503", "504"]
    for status, codes in ERROR_CODES.items():
        answer = operation["responses"][str(status)]
        name = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert schemas[name]["properties"]["error"]["enum"] == list(codes)
        assert {"error", "request_id", "message"} <= set(schemas[name]["required"])
        assert "X-Request-ID" in answer["headers"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "X-Client-Request-ID" in operation["responses"]["200"]["headers"]
    probe = {"responses": {"200": {"description": "ok"}}}
    document_readyz(probe, schemas)
    assert schemas["NotReady"]["required"] == ["ready", "reason"] and "503" in probe["responses"]


@pytest.mark.parametrize("reason", list(ERROR_CODES[400]))
def test_every_400_code_is_a_reject_reason(reason) -> None:
    from mlops_template.serving.metrics import REJECT_REASONS

    assert reason in REJECT_REASONS
