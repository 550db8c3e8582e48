"""Fixtures for the HTTP tests of the service: one packaged bento, real ``bentoml serve`` servers.

The model is trained and packaged once per session into its own temporary BentoML home (apart
from ``test_service_http.py``'s, which tampers with its store). ``start_server`` serves that bento
with extra environment settings and always stops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import (
    CONTRACT,
    MAX_BODY_BYTES,
    MAX_RECORDS,
    REPO,
    THRESHOLD,
    records_of,
    start_bento_server,
    stop_server,
    train_small_model,
    wait_ready,
)

logger = logging.getLogger(__name__)



def _package(model_dir: Path, home: Path, export_dir: Path) -> dict:
    """Package in a child process: BentoML fixes its store path once per process, and
    ``test_service_http.py`` packages into a store of its own in this one."""
    code = ("import json, sys; from pathlib import Path; "
            "from mlops_template.pipeline.packaging import package_model; "
            "print(json.dumps(package_model(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), "
            "'adult-income', 'adult_income_service', {'model_version': '7', 'stage': 'test'}, "
            "Path(sys.argv[4]) / 'champion.bento')))")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-c", code, str(model_dir), str(CONTRACT),
                           str(THRESHOLD), str(export_dir)], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Train and package a small model once; yield the bento tag, store and a good record."""
    root = tmp_path_factory.mktemp("service-bento")
    home = root / "bentoml"
    model_dir = root / "model"
    model_dir.mkdir()
    test, pipeline, spec = train_small_model(model_dir)
    result = _package(model_dir, home, root / "export")
    yield {"tag": result["bento_tag"], "home": home, "root": root, "test": test,
           "records": records_of(test), "pipeline": pipeline, "spec": spec}


@contextlib.contextmanager
def serve(bento: dict, name: str, **env: str) -> Iterator[str]:
    """Serve the bento with ``env`` added to the environment; yield its URL; always stop it."""
    log_path = Path(bento["root"]) / f"serve-{name}.log"
    process, url = start_bento_server(bento["tag"], bento["home"], log_path, **{
        "MAX_RECORDS": str(MAX_RECORDS), "MAX_BODY_BYTES": str(MAX_BODY_BYTES), **env})
    try:
        started = time.monotonic()
        wait_ready(url, process)
        logger.warning("server %s ready after %.1f s (log: %s)", name,
                       time.monotonic() - started, log_path)
        yield url
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def server(bento: dict) -> Iterator[str]:
    """One server with the default settings, shared by the tests that do not count metrics."""
    with serve(bento, "default") as url:
        yield url


@pytest.fixture(scope="session")
def start_server(bento: dict) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with start_server(name, **env) as url:`` serves a fresh server with extra settings."""
    return lambda name, **env: serve(bento, name, **env)
