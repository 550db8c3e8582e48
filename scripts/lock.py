"""Lock the Python dependencies: every package pinned, with the sha256 of every file PyPI serves for it.

People edit two files, each a list of top-level needs pinned with ``==``:

    requirements-serve.txt   what the served model needs (the image and the bento install only this)
    requirements.txt         everything else (pipeline, tests, tools); includes requirements-serve.txt

and this script generates two locks from them, which every install uses with ``--require-hashes``:

    constraints.txt          the full set of requirements.txt, every transitive package, hashed
    constraints-serve.txt    the full set of requirements-serve.txt at the same versions, hashed

    python scripts/lock.py                         # `make lock`: re-resolve after an edit (needs the index)
    python scripts/lock.py --upgrade-package NAME  # also let a transitive package NAME move
    python scripts/lock.py --check                 # offline: the locks are hashed and match the edits

Resolution keeps every version already in a lock unless an edit needs another (uv prefers the pins of
the file it rewrites). It resolves for CPython 3.11 on x86_64 Linux, whatever machine runs it, so the
result does not depend on who re-locks; the hashes cover every file of each pinned release. Each lock
records a digest of its input's requirement lines, so ``--check`` (run by ``make setup`` and the unit
tests) catches an edit that was not re-locked, extras included. Standard library only: ``--check``
runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("lock")

REPO = Path(__file__).resolve().parents[1]
FULL, SERVE = "constraints.txt", "constraints-serve.txt"
INPUTS = {FULL: "requirements.txt", SERVE: "requirements-serve.txt"}
UV_ARGS = ("--generate-hashes", "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
           "--custom-compile-command", "make lock", "--quiet")
DIGEST_PREFIX = "# requirements sha256: "
TOP_LEVEL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*(;[^#]*)?$")
LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)((?:\s+--hash=sha256:[0-9a-f]{64})+)$")


class LockError(Exception):
    """A requirements or lock file that breaks the rules above."""


def canonical(name: str) -> str:
    """A package name as pip compares it (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(path: Path) -> list[str]:
    """The lines of a requirements-format file with comments dropped and ``\\`` continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def top_level(path: Path) -> dict[str, tuple[str, str]]:
    """The exact pins a human-edited file asks for, following ``-r`` includes.

    Maps canonical name to (version, normalised requirement line); anything but ``name[extras]==version``
    with an optional marker, or ``-r file``, is refused: the locks are built from exact pins only.
    """
    pins: dict[str, tuple[str, str]] = {}
    for line in _logical_lines(path):
        if line.startswith(("-r ", "--requirement ")):
            pins.update(top_level(path.parent / line.split(None, 1)[1]))
            continue
        match = TOP_LEVEL.match(line)
        if not match:
            raise LockError(f"{path.name}: {line!r} is not an exact pin (name==version)")
        name, extras, version, marker = match.groups()
        extras = ",".join(sorted(canonical(e) for e in (extras or "[]")[1:-1].split(",") if e.strip()))
        normal = f"{canonical(name)}[{extras}]=={version}" + (f";{' '.join(marker[1:].split())}" if marker else "")
        pins[canonical(name)] = (version, normal)
    return pins


def input_digest(path: Path) -> str:
    """sha256 over the normalised requirement lines of ``path`` (comments and order do not count)."""
    lines = sorted(normal for _, normal in top_level(path).values())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def locked(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """The packages of a lock file: canonical name -> (version, sha256 hashes); refuses any other line."""
    packages: dict[str, tuple[str, frozenset[str]]] = {}
    for line in _logical_lines(path):
        match = LOCKED.match(line)
        if not match:
            raise LockError(f"{path.name}: {line[:100]!r} is not 'name==version --hash=sha256:...'")
        name, version, hashes = match.groups()
        packages[canonical(name)] = (version, frozenset(re.findall(r"[0-9a-f]{64}", hashes)))
    return packages


def versions(path: Path) -> dict[str, str]:
    """Canonical name -> version of every ``name==version`` line, hashed or not (an older lock too)."""
    lines = (re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line) for line in _logical_lines(path))
    return {canonical(m[1]): m[2] for m in lines if m}


def recorded_digest(path: Path) -> str | None:
    """The input digest a lock file records in its header, if any."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].split()[0]
    return None


def check(root: Path = REPO) -> list[str]:
    """Every reason the locks under ``root`` are not a hashed, current lock of its requirements files."""
    problems: list[str] = []
    packages: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
    for lock, source in INPUTS.items():
        lock_path, source_path = root / lock, root / source
        try:
            packages[lock] = locked(lock_path)
            pins = top_level(source_path)
        except (OSError, LockError) as exc:
            problems.append(str(exc))
            continue
        if recorded_digest(lock_path) != input_digest(source_path):
            problems.append(f"{lock} was not generated from the current {source}: run `make lock`")
        for name, (version, _) in sorted(pins.items()):
            got = packages[lock].get(name, ("missing",))[0]
            if got != version:
                problems.append(f"{source} pins {name}=={version}, {lock} has {name} {got}: run `make lock`")
    if len(packages) == len(INPUTS):
        for name, (version, hashes) in sorted(packages[SERVE].items()):
            if packages[FULL].get(name) != (version, hashes):
                problems.append(f"{SERVE} has {name}=={version}, {FULL} differs: run `make lock`")
    return problems


def _uv(python: Path) -> str:
    """The uv that constraints.txt pins, installed hash-checked from that entry into ``python``'s env if absent."""
    try:
        pinned = locked(REPO / FULL).get("uv")
    except LockError:  # a lock without hashes (before the first `make lock`): use the uv found
        pinned = None
    candidate = python.parent / "uv"
    uv = str(candidate) if candidate.exists() else shutil.which("uv")
    have = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split() if uv else []
    if pinned is None or (len(have) > 1 and have[1] == pinned[0]):
        if uv is None:
            raise LockError("uv is not installed and constraints.txt pins none: pip install uv")
        return uv
    hashes = " ".join(f"--hash=sha256:{h}" for h in sorted(pinned[1]))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as entry:
        entry.write(f"uv=={pinned[0]} {hashes}\n")
        entry.flush()
        logger.info("installing uv==%s (hash-checked) into %s", pinned[0], python.parent.parent)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps",
                        "-r", entry.name], check=True)
    return str(candidate)


def _record_digest(lock_path: Path, source_path: Path) -> None:
    """Write the input digest into the lock's header, after uv's own comment lines."""
    lines = [line for line in lock_path.read_text(encoding="utf-8").splitlines()
             if not line.startswith(DIGEST_PREFIX)]
    at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    note = f"{DIGEST_PREFIX}{input_digest(source_path)} ({source_path.name}; `make lock` rewrites this file)"
    lock_path.write_text("\n".join([*lines[:at], note, *lines[at:]]) + "\n", encoding="utf-8")


def lock(extra_uv_args: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Re-resolve both locks with uv; return the packages whose version changed: name -> (old, new)."""
    before = versions(REPO / FULL) if (REPO / FULL).exists() else {}
    uv = _uv(Path(sys.executable))
    for lock_name, source in INPUTS.items():
        constraint = ["-c", FULL] if lock_name == SERVE else []
        command = [uv, "pip", "compile", source, *constraint, *UV_ARGS, *extra_uv_args, "-o", lock_name]
        logger.info("%s", " ".join(command[1:]))
        subprocess.run(command, cwd=REPO, check=True)
        _record_digest(REPO / lock_name, REPO / source)
    after = versions(REPO / FULL)
    names = sorted(set(before) | set(after))
    return {n: (before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)}


def main(argv: list[str] | None = None) -> int:
    """Command line: lock (default) or ``--check``; prints what changed or what is wrong."""
    logging.basicConfig(level=logging.INFO, format="lock: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="offline: verify the locks, change nothing")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                        help="let NAME move to the newest version the pins allow (repeatable)")
    args = parser.parse_args(argv)
    if not args.check:
        try:
            changed = lock([f"--upgrade-package={name}" for name in args.upgrade_package])
        except (LockError, subprocess.CalledProcessError) as exc:
            print(f"lock failed: {exc}", file=sys.stderr)
            return 1
        for name, (old, new) in changed.items():
            print(f"{name}: {old or '(new)'} -> {new or '(removed)'}")
        print(f"{FULL}, {SERVE}: {len(changed)} version change(s)")
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and args.check:
        print(f"{FULL} and {SERVE} are hashed and match {INPUTS[FULL]} and {INPUTS[SERVE]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
