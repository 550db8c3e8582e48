"""The test tiers: each test is marked by the folder it lives in (unit, integration, e2e)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TIERS = ("unit", "integration", "e2e")
ROOT = Path(__file__).resolve().parent
# The train/test split is keyed by a secret salt (mlops_template/pipeline/splits.py). Tests, and
# the clones and servers they start, use this fixed one, so that every run splits alike and never
# depends on (or reads) a developer's own secret.
os.environ["SPLIT_SALT"] = "test-suite-split-salt-not-a-secret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, so ``-m unit`` (or ``-m "not e2e"``) selects a tier."""
    for item in items:
        relative = Path(item.fspath).resolve().relative_to(ROOT)
        if relative.parts and relative.parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, relative.parts[0]))
