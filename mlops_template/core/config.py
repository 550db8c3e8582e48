"""Parameters and logging: read ``params.yaml`` once, log in one format, find the project root."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mlops_template.core import paths

PARAMS_FILE = paths.PARAMS
EXIT_USER_ERROR = 2  # as argparse's: what the user gave is wrong (a file, a column, a value)


def setup_logging(level: int = logging.INFO) -> None:
    """One log format for every stage and command."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml; stages pick their own sections."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def project_root() -> Path:
    """The repository that owns shared state (MLflow store, BentoML home).

    ``dvc exp run --temp`` and ``--queue`` run stages in a throwaway copy under ``.dvc/tmp``
    but set ``DVC_ROOT`` to the parent repository, so state written there survives the run.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def run_command(prog: str, main: Callable[[list[str]], int], argv: list[str] | None = None,
                user_errors: tuple[type[BaseException], ...] = (ValueError, OSError)) -> int:
    """Run a command line's ``main``; a user's mistake ends in one line and exit code 2.

    A missing file, a column that is not there or a value the contract does not know is
    explained by its message: ``prog: error: ...`` on standard error, as argparse words its own
    errors. Its traceback, noise to the user, is printed only with ``--debug``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main([a for a in argv if a != "--debug"])
    except user_errors as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
