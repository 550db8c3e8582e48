"""Fixtures for end-to-end pipeline tests: fresh clones of this repository, run for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline_helpers import Clone, source_repository


@pytest.fixture(scope="session")
def make_clone(request, tmp_path_factory):
    """Factory: ``make_clone(name)`` gives a fresh clone with a local git identity."""
    source = source_repository(request.config)
    made: list[Path] = []

    def factory(name: str) -> Clone:
        path = tmp_path_factory.mktemp(name) / "repo"
        proc = subprocess.run(["git", "clone", "--quiet", str(source), str(path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"git clone failed: {proc.stderr}"
        clone = Clone(path)
        clone.git("config", "user.email", "pipeline-tests@example.com")
        clone.git("config", "user.name", "Pipeline Tests")
        made.append(path)
        return clone

    yield factory
    if request.session.testsfailed == 0:  # keep clones of a failed session for inspection
        for path in made:  # each holds models, bentos and an MLflow store: tens of MB
            shutil.rmtree(path, ignore_errors=True)
