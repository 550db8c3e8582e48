"""Lock the orchestration environment the way ``scripts/lock.py`` locks the project's.

    python orchestration/lock.py           # `make orchestration-lock`: re-resolve (needs the index)
    python orchestration/lock.py --check   # offline: constraints.txt is hashed and matches requirements.txt

``orchestration/requirements.txt`` holds exact top-level pins; ``orchestration/constraints.txt`` is
every transitive package pinned with the sha256 of every file PyPI serves for it, resolved by the
project's pinned uv for CPython 3.11 on x86_64 Linux, with the digest of its input's requirement
lines in its header so ``--check`` (run by ``make orchestration-setup``) catches an edit that was not
re-locked. The parsing and checking are ``scripts/lock.py``'s own functions. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS, LOCK = HERE / "requirements.txt", HERE / "constraints.txt"


def _project_lock():
    """``scripts/lock.py`` loaded as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("project_lock", HERE.parent / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(requirements: Path = REQUIREMENTS, lock_file: Path = LOCK) -> list[str]:
    """Every reason ``constraints.txt`` is not a hashed, current lock of ``requirements.txt``."""
    base = _project_lock()
    try:
        packages = base.locked(lock_file)
        pins = base.top_level(requirements)
    except (OSError, base.LockError) as exc:
        return [str(exc)]
    problems = []
    if base.recorded_digest(lock_file) != base.input_digest(requirements):
        problems.append("orchestration/constraints.txt was not generated from the current requirements.txt: "
                        "run `make orchestration-lock`")
    for name, (version, _) in sorted(pins.items()):
        got = packages.get(name, ("missing",))[0]
        if got != version:
            problems.append(f"orchestration/requirements.txt pins {name}=={version}, the lock has {got}")
    return problems


def lock() -> None:
    """Re-resolve ``constraints.txt`` with uv, keeping the versions it already holds where possible."""
    base = _project_lock()
    uv = base._uv(Path(sys.executable))
    args = [a if a != "make lock" else "make orchestration-lock" for a in base.UV_ARGS]
    command = [uv, "pip", "compile", str(REQUIREMENTS), *args, "-o", str(LOCK)]
    logging.info("%s", " ".join(command[1:]))
    subprocess.run(command, cwd=HERE, check=True)
    base._record_digest(LOCK, REQUIREMENTS)
    text = LOCK.read_text(encoding="utf-8")
    LOCK.write_text(text.replace("`make lock` rewrites", "`make orchestration-lock` rewrites"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command line: lock (default) or ``--check``."""
    logging.basicConfig(level=logging.INFO, format="orchestration lock: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="offline: verify the lock, change nothing")
    args = parser.parse_args(argv)
    if not args.check:
        lock()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("orchestration/constraints.txt is hashed and matches orchestration/requirements.txt")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
