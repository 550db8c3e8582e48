"""What can go wrong with a routing document: its errors, apart so that every module may raise them.

:mod:`~mlops_template.serving.routing` and :mod:`~mlops_template.serving.archives` both raise
these (routing publishes archives, archives refuse a fetched model), so they live below both
rather than in either, which would make the two modules import each other.
"""

from __future__ import annotations

from mlops_template.core.exitcodes import ExitCode

REFUSAL_REASONS = ("unsigned", "bad_signature", "no_digest", "model_sha256", "archive_sha256")


class RoutingError(ValueError):
    """A routing document does not follow the schema, or cannot be written as asked."""


class RoutingRefused(RoutingError):
    """A routing document (or a model it names) failed a trust check; ``reason`` says which.

    ``reason`` is one of :data:`REFUSAL_REASONS`: ``unsigned``, ``bad_signature`` (another key's,
    or changed after signing), ``no_digest`` (a slot without the digest the reader needs),
    ``model_sha256`` (the model's file differs), ``archive_sha256`` (the fetched archive differs).
    """

    def __init__(self, reason: str, message: str) -> None:
        """``reason``: a label of :data:`REFUSAL_REASONS`; ``message``: the explanation."""
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class RoutingConflict(RoutingError):
    """The routing document changed since the writer read it: nothing was written.

    Someone else's transition landed in between; overwriting it would silently undo theirs. The
    command ends with :attr:`ExitCode.LOCKED`: look at what serves now and run it again.
    """

    code = ExitCode.LOCKED
