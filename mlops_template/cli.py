"""``mlops-template <command>`` (also ``python -m mlops_template <command>``): every command, one opening.

Each command's options are built by its own module (``add_arguments``-style functions) and run by
its handler; this module does what every command shares, once:

- logging in one format, and ``--debug`` (anywhere on the line) for the traceback of a failure;
- the shared-services preflight (tracking server, object store) for the commands that change the
  deployment, before anything is touched: exit :attr:`ExitCode.UNAVAILABLE` naming the service;
- the exit codes of :class:`~mlops_template.core.exitcodes.ExitCode`, the same for every command;
- a user's mistake (a missing file, a wrong column or value, an unreachable URL) ends in ONE line,
  ``mlops-template <command>: error: ...``, and its documented exit code, without a traceback;
  a fault of the program keeps its traceback.

Only the module of the command being run is imported, so ``apikeys list`` does not load pandas.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_template.core import paths
from mlops_template.core.exitcodes import CommandParser, ExitCode, ServiceUnavailable, UserError

PROG = "mlops-template"

logger = logging.getLogger("mlops_template.cli")


def _always(args: argparse.Namespace) -> bool:
    return True


def _never(args: argparse.Namespace) -> bool:
    return False


@dataclass(frozen=True)
class Command:
    """Where a command lives and what its opening needs."""

    module: str
    help: str
    add: str = "add_arguments"  # the module's function that adds the command's options to a parser
    handle: str = "handle"  # the module's function that runs it: args -> exit code
    needs_services: Callable[[argparse.Namespace], bool] = _never  # run the shared-services preflight
    # Exceptions that, from this command, can only be a mistake in what the user gave
    user_errors: tuple[str, ...] = ()
    # Exceptions that are an expected, explained failure (one line, exit 1, no traceback)
    failures: tuple[str, ...] = ()
    # The module's function that also reports such an ending its own way (retrain's JSON line)
    report_error: str | None = None


USER_ERRORS = ("ValueError", "OSError")

COMMANDS: dict[str, Command] = {
    "onboard": Command("mlops_template.pipeline.onboarding", "adopt a CSV: draft its contract, point params.yaml at it",
                       user_errors=USER_ERRORS),
    "contract": Command("mlops_template.pipeline.inference", "draft a data contract from a CSV (infer) or check one",
                        user_errors=USER_ERRORS),
    "retrain": Command("mlops_template.ops.retrain", "guard new batches, retrain, gate, deploy; optionally commit",
                       needs_services=_always, report_error="report_error"),
    "incoming": Command("mlops_template.ops.incoming", "team mode: list or fetch the batches under INCOMING_URL",
                        failures=("OSError",)),
    "rollback": Command("mlops_template.ops.rollback", "serve an earlier champion again, without rebuilding",
                        needs_services=_always, failures=("RollbackError", "RoutingError")),
    "canary": Command("mlops_template.ops.canary", "start, judge and settle a canary (start, decide, status)",
                      needs_services=lambda args: args.command != "status",
                      failures=("CanaryError", "RoutingError", "OSError")),
    "experiments": Command("mlops_template.ops.experiments", "show DVC experiments readably; promote a blessed one"),
    "drift": Command("mlops_template.monitoring.commands", "compare recent inputs with the reference sample (cron)",
                     add="add_drift_arguments", handle="handle_drift", user_errors=USER_ERRORS),
    "quality": Command("mlops_template.monitoring.commands", "score logged predictions against ground truth (cron)",
                       add="add_quality_arguments", handle="handle_quality", user_errors=USER_ERRORS),
    "golden": Command("mlops_template.pipeline.golden", "fix the golden evaluation set (freeze) or show it",
                      user_errors=(*USER_ERRORS, "GoldenSetError")),
    "apikeys": Command("mlops_template.core.apikeys", "create, list and revoke API keys of the front and service",
                       user_errors=("KeyFileError", "OSError")),
    "keygen": Command("mlops_template.core.signing", "write an Ed25519 key pair for signed routing documents",
                      user_errors=("OSError",)),
    "score": Command("mlops_template.ops.batch_scoring", "score a CSV or parquet file offline with the champion",
                     user_errors=(*USER_ERRORS, "DataValidationError"), failures=("ModelIntegrityError",)),
}


def invocation() -> str:
    """How this command line was started, for records that keep it: ``mlops-template`` or ``python -m ...``."""
    return PROG if Path(sys.argv[0]).name == PROG else "python -m mlops_template"


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; only ``chosen``'s module is imported to add its options."""
    parser = CommandParser(prog=PROG, description=__doc__.split("\n")[0].replace("``", ""),
                           epilog="Exit codes: see README.md, 'Exit codes'. --debug anywhere shows tracebacks.")
    parser.add_argument("--debug", action="store_true", help="log the traceback of a failure")
    commands = parser.add_subparsers(dest="cli_command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            getattr(importlib.import_module(command.module), command.add)(sub)
            sub.set_defaults(handler=getattr(importlib.import_module(command.module), command.handle))
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named on the line (the first word that is not an option), if it is one."""
    return next((word for word in argv if not word.startswith("-")), None)


def _matches(exc: BaseException, names: tuple[str, ...]) -> bool:
    return any(kind.__name__ in names for kind in type(exc).__mro__)


def preflight(command: str) -> None:
    """Stop with :class:`ServiceUnavailable` when a shared service the command needs does not answer."""
    from mlops_template.core.params import load as load_params
    from mlops_template.ops.process import shared_services_down

    down = shared_services_down(load_params().mlflow)
    if down is not None:
        raise ServiceUnavailable(f"{command} not started: {down}; nothing was changed")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, open as every command does, run the command; returns its exit code."""
    from mlops_template.core.config import setup_logging

    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words
    words = [w for w in words if w != "--debug"]
    chosen = _chosen(words)
    try:
        args = build_parser(chosen if chosen in COMMANDS else None).parse_args(words)
    except SystemExit as exc:  # --help (0) or a usage error (64, printed by the parser)
        return int(exc.code or 0)
    args.debug, args.invocation = debug, invocation()
    setup_logging(logging.DEBUG if debug else logging.INFO)
    name = args.cli_command
    command = COMMANDS[name]
    try:
        if command.needs_services(args):
            if not paths.PARAMS.exists():
                raise UserError(f"{paths.PARAMS} not found in {Path.cwd()}: run from the repository root")
            preflight(name)
        return int(args.handler(args))
    except Exception as exc:  # sorted below: only known kinds end in one line
        code = _code_of(exc, command)
        if code is None:
            raise  # a fault of the program keeps its traceback
        if command.report_error:
            getattr(importlib.import_module(command.module), command.report_error)(code, _reason(exc))
        return _one_line(name, exc, code, debug)


def _code_of(exc: BaseException, command: Command) -> ExitCode | None:
    """The exit code of an explained failure, or None for a fault of the program."""
    from mlops_template.core.objectstore import StoreUnavailable

    if isinstance(exc, (UserError, ServiceUnavailable)):
        return exc.code
    if isinstance(getattr(exc, "code", None), ExitCode):  # lease.Locked, routing.RoutingConflict: try again
        return exc.code  # type: ignore[attr-defined]
    if isinstance(exc, StoreUnavailable):
        return ExitCode.UNAVAILABLE
    if _matches(exc, (*command.user_errors, "ParamsError")):  # params.yaml is the user's too
        return ExitCode.BAD_INPUT
    if _matches(exc, command.failures):
        return ExitCode.FAILED
    return None


def _one_line(command: str, exc: BaseException, code: ExitCode, debug: bool) -> int:
    """``mlops-template COMMAND: error: REASON`` on standard error (the traceback first with --debug)."""
    if debug:
        logger.error("%s failed", command, exc_info=exc)
    print(f"{PROG} {command}: error: {_reason(exc)}", file=sys.stderr, flush=True)
    return code


def _reason(exc: BaseException) -> str:
    """The exception's message on one line; a bare OSError keeps its file name."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


def run_deprecated(old: str, words: Sequence[str]) -> int:
    """An old spelling, ``python -m mlops_template.OLD WORDS``: a notice on stderr, then ``mlops-template WORDS``."""
    new = _chosen(words) or "COMMAND"
    print(f"{PROG}: `python -m mlops_template.{old}` is deprecated and goes in the next release; "
          f"use `{PROG} {new}` (or `python -m mlops_template {new}`)", file=sys.stderr, flush=True)
    return main(list(words))
