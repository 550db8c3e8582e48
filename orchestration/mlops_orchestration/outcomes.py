"""Turn a finished command into a Dagster outcome: output metadata, run tags, a Failure or a retry.

See :mod:`mlops_orchestration.exitcodes` for which exit code becomes what, and why.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import Backoff, Failure, MetadataValue, OpExecutionContext, RetryPolicy

from mlops_orchestration.commands import Completed, ProjectEnvMissing, repo, run
from mlops_orchestration.exitcodes import outcome_of

OUTCOME_TAG, ALERT_TAG, EXIT_TAG = "mlops/outcome", "mlops/alert", "mlops/exit_code"


class RetryableExit(Exception):
    """The command exited 69 (a shared service is down) or 75 (locked): nothing changed, try again.

    Raised so that the op's :func:`retry_policy` retries it; a :class:`dagster.Failure` with
    ``allow_retries=False`` is raised for every code a retry cannot fix.
    """


def retry_policy() -> RetryPolicy:
    """Exponential backoff for 69 and 75: Dagster waits ``(2**n - 1)`` times ``$ORCHESTRATION_RETRY_DELAY_S``
    (30 s) before retry ``n``, at most ``$ORCHESTRATION_MAX_RETRIES`` (5) times: 30 s, 1.5, 3.5, 7.5 and
    15.5 min, about 28 minutes in all, longer than a retrain on the bundled data holds the lock."""
    delay = float(os.environ.get("ORCHESTRATION_RETRY_DELAY_S", "30"))
    retries = int(os.environ.get("ORCHESTRATION_MAX_RETRIES", "5"))
    if delay <= 0 or retries < 0:
        raise ValueError("ORCHESTRATION_RETRY_DELAY_S must be > 0 and ORCHESTRATION_MAX_RETRIES >= 0, "
                         f"got {delay} and {retries}")
    return RetryPolicy(max_retries=retries, delay=delay, backoff=Backoff.EXPONENTIAL)


def execute(*words: str) -> Completed:
    """:func:`mlops_orchestration.commands.run`, with a missing project environment a Failure no retry can fix."""
    try:
        return run(*words)
    except ProjectEnvMissing as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


def path_value(relative: str) -> MetadataValue:
    """A repository file as path metadata (absolute, so the UI shows where it is)."""
    return MetadataValue.path(str(repo() / relative))


def conclude(context: OpExecutionContext, done: Completed, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log the command, tag the run with its outcome, and return its metadata or raise.

    Returns the metadata for a success or a notice (the caller attaches it to its output); raises
    :class:`dagster.Failure` (no retry) or :class:`RetryableExit` (retried) otherwise.
    """
    outcome = outcome_of(done.code)
    metadata: dict[str, Any] = {
        "command": done.line,
        "exit_code": done.code,
        "outcome": outcome.name,
        "meaning": outcome.meaning,
        "seconds": done.seconds,
        "summary": MetadataValue.json(done.summary),
        "output": MetadataValue.md(f"```\n{done.tail()}\n```"),
        **(extra or {}),
    }
    context.log.info(f"{done.line} exited {done.code} ({outcome.name}) after {done.seconds} s\n{done.tail()}")
    tags = {OUTCOME_TAG: outcome.name, EXIT_TAG: str(done.code)}
    if outcome.alert:
        tags[ALERT_TAG] = "true"
    context.instance.add_run_tags(context.run_id, tags)
    if outcome.kind == "retry":
        raise RetryableExit(f"{done.line} exited {done.code} ({outcome.name}): {outcome.meaning}; "
                            f"retry {context.retry_number + 1} follows with backoff if any is left")
    if outcome.kind == "failure":
        raise Failure(description=f"{done.line} exited {done.code} ({outcome.name}): {outcome.meaning}",
                      metadata=metadata, allow_retries=False)
    if outcome.kind == "notice":
        context.log.warning(f"{outcome.name}: {outcome.meaning}")
    return metadata
