"""What the request guard and the API-key check left on a request, read by the service's API."""

from __future__ import annotations

from typing import Any

from mlops_template.serving.auth import KEY_NAME_STATE


def request_id_of(ctx: Any) -> str:
    """The id the request guard gave this request (``-`` when called without the guard)."""
    return str(getattr(ctx.request.state, "request_id", "-"))


def client_request_id_of(ctx: Any) -> str | None:
    """The client's own ``X-Request-ID`` the guard kept apart, if it sent a sane one."""
    return getattr(ctx.request.state, "client_request_id", None)


def routing_key_of(ctx: Any, request_id: str) -> str:
    """What the canary split hashes: the request's API key name, else the service's request id.

    Never a header: a client that chose its model could steer the canary's verdict.
    """
    return getattr(ctx.request.state, KEY_NAME_STATE, None) or request_id
