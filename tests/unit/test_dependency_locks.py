"""The dependency locks: every package pinned and hashed, and current with the hand-edited pins.

``requirements.txt`` and ``requirements-serve.txt`` are edited by hand; ``make lock`` (scripts/lock.py)
writes ``constraints.txt`` and ``constraints-serve.txt`` from them, and every install (make setup, CI,
the Dockerfile, the bento) uses the locks with ``--require-hashes``. A hand edit that forgets to
re-lock fails here, in the unit tier. The first two tests parse the files on their own, without the
lock script, so a fault in the script cannot hide a bad lock.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from scripts.lock import check

REPO = Path(__file__).resolve().parents[2]
LOCKS = {"constraints.txt": "requirements.txt", "constraints-serve.txt": "requirements-serve.txt"}
HASHED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(path: Path) -> list[str]:
    """Logical lines: continuations joined, comments and blank lines dropped."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text(encoding="utf-8"))
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def _lock_versions(path: Path) -> dict[str, str]:
    return {_name(m[1]): m[2] for m in map(HASHED.match, _requirement_lines(path)) if m}


def _pins(path: Path) -> dict[str, str]:
    """The hand-edited pins, following ``-r`` includes."""
    pins: dict[str, str] = {}
    for line in _requirement_lines(path):
        if line.startswith("-r "):
            pins.update(_pins(path.parent / line.split(None, 1)[1]))
        elif match := PIN.match(line):
            pins[_name(match[1])] = match[2]
        else:
            pytest.fail(f"{path.name}: {line!r} is not an exact pin")
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_lock_line_is_pinned_and_hashed(lock: str) -> None:
    lines = _requirement_lines(REPO / lock)
    assert len(lines) > 50, f"{lock} holds only {len(lines)} requirements"
    bad = [line[:120] for line in lines if not HASHED.match(line)]
    assert not bad, f"{lock}: lines without an exact pin and a sha256 hash: {bad}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_holds_the_hand_edited_pins(lock: str) -> None:
    locked, pins = _lock_versions(REPO / lock), _pins(REPO / LOCKS[lock])
    differ = {name: (version, locked.get(name)) for name, version in pins.items() if locked.get(name) != version}
    assert not differ, f"{LOCKS[lock]} pin -> {lock} version (run `make lock`): {differ}"


def test_the_serving_lock_is_the_full_lock_at_the_same_versions() -> None:
    full, serve = _lock_versions(REPO / "constraints.txt"), _lock_versions(REPO / "constraints-serve.txt")
    differ = {name: (version, full.get(name)) for name, version in serve.items() if full.get(name) != version}
    assert not differ, differ
    training_only = {"dvc", "mlflow", "pandera", "evidently", "pytest"} & set(serve)
    assert not training_only, f"training-only packages in the serving lock: {training_only}"


def test_the_lock_script_finds_the_repository_current() -> None:
    assert check(REPO) == []


def _copy(tmp_path: Path) -> Path:
    for name in (*LOCKS, *LOCKS.values()):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _first_pin(path: Path) -> str:
    return next(line for line in _requirement_lines(path) if PIN.match(line)).split()[0]


@pytest.mark.parametrize("edit", ["version", "extra", "added", "unpinned", "hash-dropped"])
def test_an_edit_that_was_not_relocked_is_refused(tmp_path: Path, edit: str) -> None:
    root = _copy(tmp_path)
    serve, full = root / "requirements-serve.txt", root / "requirements.txt"
    pin = _first_pin(serve)
    name, version = pin.split("==")
    if edit == "version":  # a bumped pin
        _edit(serve, pin, f"{name}=={version}.post99")
    elif edit == "extra":  # same version, new extra: new dependencies the lock lacks
        _edit(serve, pin, f"{name}[somextra]=={version}")
    elif edit == "added":  # a new package never locked
        full.write_text(full.read_text(encoding="utf-8") + "not-a-locked-package==1.0\n", encoding="utf-8")
    elif edit == "unpinned":  # a range instead of a pin
        _edit(serve, pin, f"{name}>={version}")
    else:  # a lock line hand-edited without its hashes
        lock = root / "constraints-serve.txt"
        text = lock.read_text(encoding="utf-8")
        entry = re.search(rf"^{re.escape(name)}==\S+ \\\n(    --hash=sha256:[0-9a-f]{{64}}(?: \\)?\n)+", text,
                          flags=re.M | re.I)
        assert entry, f"{name} not in constraints-serve.txt"
        lock.write_text(text.replace(entry[0], f"{name}=={version}\n"), encoding="utf-8")
    problems = check(root)
    assert problems, f"check accepted the {edit} edit"
    assert all("make lock" in p or "not an exact pin" in p or "is not 'name==version" in p for p in problems), problems
