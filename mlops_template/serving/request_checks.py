"""The checks of a request body that make a client's mistake a 400 answer naming it.

Used by :class:`~mlops_template.serving.guard.RequestGuard` before a request takes a concurrency
slot: :func:`parse_json` reads the body as strict UTF-8 JSON (no repeated keys, bounded nesting
and digits), :func:`error_detail` turns one pydantic error into the ``details`` entry of the
answer. Either refusal is a :class:`Rejection`, whose ``reason`` is the metrics label and the
``error`` field of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_FIELD_NAME = 64


class Rejection(Exception):
    """A request refused before it reached the model."""

    def __init__(self, status: int, reason: str, message: str, records: int = 0,
                 details: list[dict] | None = None) -> None:
        """``reason`` is the metrics label and the ``error`` field of the answer."""
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.records, self.details = records, details


def parse_json(body: bytes) -> Any:
    """Strict UTF-8 JSON, with 400 answers for anything else.

    Python's parser reads the non-JSON literals ``NaN`` and ``Infinity`` as floats; they are
    kept so that validation refuses them naming the record and field (no contract type accepts
    a non-finite number).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(400, "malformed_json",
                        f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise Rejection(400, "malformed_json", f"body is not valid JSON: the key {exc.key!r} is given "
                                               "twice in one object") from None
    except json.JSONDecodeError as exc:
        raise Rejection(400, "malformed_json",
                        f"body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                        f"{exc.colno}") from None
    except RecursionError:
        raise Rejection(400, "malformed_json", "body is nested too deeply") from None
    except ValueError:  # an integer longer than Python's digit limit
        raise Rejection(400, "malformed_json", "body holds a number with too many digits") from None


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (parsers disagree on which one wins)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook that refuses an object with a repeated key."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def error_detail(error: Mapping[str, Any]) -> dict[str, Any]:
    """One pydantic error as ``{"record", "field", "message"}``.

    The input value is looked at only to say "null" plainly; it is never echoed back.
    """
    loc = list(error.get("loc", ()))
    record = field_name = None
    if len(loc) >= 2 and loc[0] == "records" and isinstance(loc[1], int):
        record = loc[1]
        rest = loc[2:]
    else:
        rest = loc
    if rest:
        field_name = str(rest[0])[:MAX_FIELD_NAME]
    message = error.get("msg", "invalid value")
    if error.get("input", ...) is None and error.get("type") not in ("missing", "extra_forbidden"):
        message = "may not be null"
    return {"record": record, "field": field_name, "message": message}
