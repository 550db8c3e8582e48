"""The Dockerfile, built and run for real with podman by ``scripts/verify_container.sh``.

The script builds the serving image, runs it, waits for ``/readyz``, sends a real prediction,
runs the HEALTHCHECK, checks the user is not root and that no training-only package is in the
image. After ``make pipeline`` it builds the repository itself (the deployed bento); in a fresh
clone, where ``models/serving/`` is empty, it builds a scratch context with a bento of a small
model made by ``scripts/make_test_bento.py``.

Slow (about 4 minutes with a cached base image, 6 when the debootstrap base is made first) and
skipped where podman cannot run: no podman or runc, or not root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "verify_container.sh"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "constraints-serve.txt")
TIMEOUT = 1200


def _skip_reason() -> str | None:
    """Why podman cannot build and run an image here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman runc debootstrap)"
    if shutil.which(os.environ.get("PODMAN_RUNTIME", "runc")) is None:
        return "runc is not installed (apt-get install runc): podman's crun fails on this host"
    if os.geteuid() != 0:
        return "rootful podman needs root"
    return None


def _deployed_archive() -> Path | None:
    """The archive deployments/champion.json names, if the pipeline has produced it."""
    champion = REPO / "deployments" / "champion.json"
    if not champion.exists():
        return None
    archive = json.loads(champion.read_text())["champion"].get("archive")
    return REPO / archive if archive and (REPO / archive).exists() else None


def _scratch_context(root: Path) -> Path:
    """A build context laid out like the repository, around a freshly packaged small bento."""
    context = root / "context"
    (context / "deployments").mkdir(parents=True)
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, context / name)
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_test_bento.py"),
         "--export-dir", str(context / "models" / "serving"), "--model-version", "container-test"],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    result = json.loads(made.stdout.strip().splitlines()[-1])
    champion = {"champion": {"bento_tag": result["bento_tag"],
                             "archive": "models/serving/champion.bento",
                             "model_version": result["model_version"]}}
    (context / "deployments" / "champion.json").write_text(json.dumps(champion))
    return context


def test_container_builds_serves_and_is_healthy(tmp_path: Path) -> None:
    """verify_container.sh exits 0 and reports its measurements."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    results = tmp_path / "container.json"
    env = {**os.environ, "RESULTS": str(results)}
    if _deployed_archive() is None:
        env["CONTEXT"] = str(_scratch_context(tmp_path))
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert run.returncode == 0, f"verify_container.sh failed:\n{run.stderr[-6000:]}"
    assert "verify_container.sh: OK" in run.stderr
    measured = json.loads(results.read_text())
    assert measured["container_uid"] != 0
    assert 0 < measured["image_size_mb"] < 2000
    assert 0.0 <= measured["prediction"]["probability"] <= 1.0
