"""The Dagster orchestration (orchestration/) tested from the main suite, in its own environment.

Dagster does not co-install with the project's pins, so its tests run with
``.venv-orchestration``'s python in a subprocess (``make test`` sets that environment up first,
``make orchestration-setup`` alone does too). They clone this checkout, train, and run every job,
the incoming sensor, a retry on exit 75 and ``dagster dev`` with its GraphQL API for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ORCHESTRATION_PYTHON = REPO / ".venv-orchestration/bin/python"
TIMEOUT_S = 1800


@pytest.mark.skipif(not ORCHESTRATION_PYTHON.exists(),
                    reason=f"{ORCHESTRATION_PYTHON} is missing: run `make orchestration-setup` (make test does)")
def test_orchestration_suite_passes():
    proc = subprocess.run([str(ORCHESTRATION_PYTHON), "-m", "pytest", "orchestration/tests", "-q", "-x",
                           f"--rootdir={REPO / 'orchestration'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
                               "MLOPS_TEMPLATE_PYTHON": sys.executable})  # this checkout's project env
    assert proc.returncode == 0, f"orchestration tests failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]
