"""The orchestration lock is hashed and current, and an edit that was not re-locked is caught."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from conftest import ORCHESTRATION

spec = importlib.util.spec_from_file_location("orchestration_lock", ORCHESTRATION / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def test_the_lock_matches_the_requirements_and_every_line_is_hashed():
    assert lock.check() == []


def test_an_edit_without_relocking_is_refused(tmp_path: Path):
    requirements, constraints = tmp_path / "requirements.txt", tmp_path / "constraints.txt"
    shutil.copy(ORCHESTRATION / "constraints.txt", constraints)
    requirements.write_text((ORCHESTRATION / "requirements.txt").read_text().replace(
        "dagster-webserver==1.13.28", "dagster-webserver==1.13.27"))
    problems = lock.check(requirements, constraints)
    assert any("was not generated from the current requirements.txt" in p for p in problems), problems
    assert any("dagster-webserver==1.13.27, the lock has 1.13.28" in p for p in problems), problems
    constraints.write_text(constraints.read_text().replace("--hash=sha256:", "--hash=md5:", 1))
    assert any("is not 'name==version --hash=sha256:...'" in p for p in lock.check(requirements, constraints))
