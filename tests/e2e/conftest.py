"""Fixtures for the end-to-end tests: fresh clones of this repository, run for real."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.clones import Clone, source_repository


@pytest.fixture(scope="session")
def make_clone(request, tmp_path_factory):
    """Factory: ``make_clone(name, user=...)`` gives a fresh clone with a local git identity."""
    source = source_repository(request.config)
    made: list[Path] = []

    def factory(name: str, user: str = "pipeline-tests") -> Clone:
        clone = Clone.create(tmp_path_factory.mktemp(name) / "repo", user, source)
        made.append(clone.path)
        return clone

    yield factory
    if request.session.testsfailed == 0:  # keep clones of a failed session for inspection
        for path in made:  # each holds models, bentos and an MLflow store: tens of MB
            shutil.rmtree(path, ignore_errors=True)
