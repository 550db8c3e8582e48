"""What each exit code of an ``mlops-template`` command becomes in Dagster.

The numbers are the project's ``ExitCode`` (``mlops_template/core/exitcodes.py``, README "Exit
codes"), copied here rather than imported: nothing of the project is imported into the Dagster
process. ``orchestration/tests/test_exitcodes.py`` asks the project's own environment for its
enum and fails when the two disagree, so a renumbering cannot go unnoticed.

Outcomes:

- ``success``: the run succeeds.
- ``notice``: the run succeeds and its run carries the tags ``mlops/outcome=<name>`` and, for
  the ones a person should look at, ``mlops/alert=true``. Used for the codes that mean the command
  did its job and reported something: 3 not blessed, 4 wait, 5 rolled back, 6 alert. The
  command has already notified (drift and quality through their alert sink, the canary through
  the history and MLflow tags), so failing the run would alert twice and make a working monitor
  look broken in the run history.
- ``failure``: a :class:`dagster.Failure` with ``allow_retries=False`` (a retry cannot help):
  1 failed, 2 quarantined (every batch was quarantined: nothing was retrained and someone must look
  at ``data/quarantine/batches/``; a failed run is what Dagster's run-failure sensors and alert
  policies fire on, like the CI workflow that fails its job on 2), 64 usage, 65 bad input.
- ``retry``: an exception the op's :class:`dagster.RetryPolicy` retries with exponential backoff:
  69 a shared service does not answer, 75 another operator holds the lock. Nothing was changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["success", "notice", "failure", "retry"]

# name -> number, exactly as mlops_template.core.exitcodes.ExitCode
EXIT_CODES: dict[str, int] = {
    "OK": 0,
    "FAILED": 1,
    "QUARANTINED": 2,
    "NOT_BLESSED": 3,
    "WAIT": 4,
    "ROLLED_BACK": 5,
    "ALERT": 6,
    "USAGE": 64,
    "BAD_INPUT": 65,
    "UNAVAILABLE": 69,
    "LOCKED": 75,
}


@dataclass(frozen=True)
class Outcome:
    """How a run ends for one exit code: its kind, a short name for tags, whether to alert, why."""

    kind: Kind
    name: str
    alert: bool
    meaning: str


OUTCOMES: dict[int, Outcome] = {
    0: Outcome("success", "ok", False, "done (also: nothing to do)"),
    1: Outcome("failure", "failed", True, "a step failed; see the command's output"),
    2: Outcome("failure", "quarantined", True,
               "every incoming batch was quarantined, nothing retrained: look at data/quarantine/batches/"),
    3: Outcome("notice", "not_blessed", False, "the gate said no: the champion stays"),
    4: Outcome("notice", "wait", False, "not enough canary evidence yet: the next run decides"),
    5: Outcome("notice", "rolled_back", True, "the challenger was rolled back"),
    6: Outcome("notice", "alert", True, "drift or a quality drop was detected and alerted"),
    64: Outcome("failure", "usage", True, "the command line is wrong (a bug in the job's configuration)"),
    65: Outcome("failure", "bad_input", True, "a file, column or value given is wrong"),
    69: Outcome("retry", "unavailable", False, "a shared service does not answer; nothing was changed"),
    75: Outcome("retry", "locked", False, "another operator holds the transition lease; nothing was changed"),
}


def outcome_of(code: int) -> Outcome:
    """The outcome of exit status ``code``; an unknown code (a crash, a signal) is a failure."""
    if code in OUTCOMES:
        return OUTCOMES[code]
    return Outcome("failure", f"exit_{code}", True, f"unexpected exit status {code} (killed or crashed?)")
