"""The exit codes of every ``mlops-template`` command: one number, one meaning, whatever the command.

Cron, CI, the retrain workflow and the Kubernetes CronJob read these numbers, so each keeps its
meaning across commands (``README.md``, "Exit codes", lists which command gives which). The
codes from 64 on are the BSD ``sysexits.h`` ones a scheduler may already know.
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum, unique
from typing import NoReturn


@unique
class ExitCode(IntEnum):
    """What a command's exit status means; the same value never means two things."""

    OK = 0  # done (including "nothing to do" and "too little data to judge")
    FAILED = 1  # an unexpected failure: a step (dvc repro, git commit, a write) did not work
    QUARANTINED = 2  # retrain: every incoming batch was quarantined, nothing retrained
    NOT_BLESSED = 3  # the gate said no: the candidate or experiment is not promoted
    WAIT = 4  # canary decide: not enough evidence yet, run it again later
    ROLLED_BACK = 5  # canary decide: the challenger was rolled back
    ALERT = 6  # drift or quality: an alert was raised
    USAGE = 64  # EX_USAGE: the command line is wrong (unknown option, missing argument)
    BAD_INPUT = 65  # EX_DATAERR: a file, column or value given is wrong (or params.yaml and the contract disagree)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a service the command needs does not answer; nothing was changed
    LOCKED = 75  # EX_TEMPFAIL: another retrain or rollback holds the lock; try again later


class UserError(Exception):
    """A mistake in what the user gave (a path, a column, a value): one line, :attr:`ExitCode.BAD_INPUT`.

    Raised where the mistake is found, with a message that names the file, column, value or URL.
    """

    code = ExitCode.BAD_INPUT


class ServiceUnavailable(Exception):
    """A service the command needs (named in the message, URL included) does not answer."""

    code = ExitCode.UNAVAILABLE


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit :attr:`ExitCode.USAGE` (64), not argparse's 2.

    2 means "every batch quarantined" to a scheduler reading ``retrain``'s status.
    """

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``PROG: error: MESSAGE``, then exit 64."""
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")
