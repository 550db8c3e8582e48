"""Small ASGI pieces shared by the service's middlewares (:mod:`~mlops_template.serving.auth`,
:mod:`~mlops_template.serving.guard`): the message types, JSON answers, added headers, a write
deadline, and the client's own request id.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class SendTimeout(Exception):
    """A write of the response did not complete in time: the client is not reading."""


def client_request_id(headers: dict[str, str]) -> str | None:
    """The client's ``X-Request-ID`` when it is a sane token (kept apart, never used as the id)."""
    given = headers.get("x-request-id", "")
    return given if CLIENT_REQUEST_ID.match(given) else None


def with_headers(send: Send, added: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds headers to the response start."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *added]}
        await send(message)
    return wrapped


def with_deadline(send: Send, timeout_s: float) -> Send:
    """``send`` that raises :class:`SendTimeout` when one write takes more than ``timeout_s``.

    uvicorn's ``send`` waits while the connection's write buffer is above its high-water mark,
    that is, until the client reads; a client that never does would make it wait for ever.
    """
    async def wrapped(message: Message) -> None:
        try:
            async with asyncio.timeout(timeout_s):  # a timer on this task, no task of its own
                await send(message)
        except TimeoutError:
            raise SendTimeout(f"a response write took more than {timeout_s:g} s") from None
    return wrapped


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A complete compact JSON response."""
    content = json.dumps(body, separators=(",", ":")).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
        *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": content, "more_body": False})
