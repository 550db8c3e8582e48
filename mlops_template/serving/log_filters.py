"""Log filters that keep the server log honest: one line per record, client errors at INFO.

BentoML logs a client's validation error as an ERROR with a traceback
(:class:`ClientErrorLogFilter` makes it one INFO line), and writes text a client controls (a
percent-decoded ``%0a`` in the path, a header value) into its access log.
:class:`ControlCharacterFilter` escapes control characters (``\\n``, ``\\r``, other C0/C1
controls, U+2028/U+2029) in the lines of BentoML's access log and of every other logger that
reaches the server's handlers, so that such text can never start a forged line of the server log.
The service installs both once per worker with :func:`install_log_filter`.
"""

from __future__ import annotations

import logging
import re

from pydantic import ValidationError


class ClientErrorLogFilter(logging.Filter):
    """Turns BentoML's ERROR-with-traceback for a client's invalid input into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Downgrade records whose exception is a client error; keep every other record."""
        exc = record.exc_info[1] if record.exc_info else None
        if _is_client_error(exc):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "client error on %s [%s]: " + type(exc).__name__
            record.exc_info = record.exc_text = None
        return True


def _is_client_error(exc: BaseException | None) -> bool:
    """A pydantic validation error, or a BentoML exception with a 4xx code."""
    if isinstance(exc, ValidationError):
        return True
    code = getattr(getattr(exc, "error_code", None), "value", None)
    return isinstance(code, int) and 400 <= code < 500


# Control characters, and the characters that str.splitlines and some log viewers also break
# lines on (C1 controls such as NEL U+0085, LINE/PARAGRAPH SEPARATOR).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# BentoML's loggers that write text a client controls (the access log's path and content type,
# the path of a failed request).
ESCAPED_LOGGERS = ("bentoml.access", "bentoml._internal.server.http_app", "bentoml.serve", "uvicorn.error")


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class ControlCharacterFilter(logging.Filter):
    """Escapes control characters in a record's message, so that one record is one log line.

    The message is formatted with its arguments first (a client's text usually arrives as an
    argument, such as the access log's path); a record without control characters is left as it
    is. The traceback of an exception is not touched: the formatter adds it below the line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it holds a control character; keep every record."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it always does
            return True
        escaped = escape_control(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def install_log_filter(logger_name: str = "bentoml._internal.server.http_app") -> None:
    """Install the guard's log filters, once each.

    :class:`ClientErrorLogFilter` goes on BentoML's request logger. :class:`ControlCharacterFilter`
    goes on the BentoML loggers that write client-controlled text (:data:`ESCAPED_LOGGERS`), after
    any filter already there, and on every handler of the root and ``bentoml`` loggers, which
    the server's records all reach (a logger's own filters do not apply to its children's
    records, a handler's do): this package's lines with request ids or payloads are covered too.
    """
    target = logging.getLogger(logger_name)
    if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
        target.addFilter(ClientErrorLogFilter())
    handlers = {*logging.getLogger().handlers, *logging.getLogger("bentoml").handlers}
    for filterer in [*(logging.getLogger(name) for name in ESCAPED_LOGGERS), *handlers]:
        if not any(isinstance(f, ControlCharacterFilter) for f in filterer.filters):
            filterer.addFilter(ControlCharacterFilter())
