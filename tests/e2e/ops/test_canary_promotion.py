"""A canary promoted, then rolled back, in a fresh clone: every consumer of the record follows.

After ``canary decide`` promotes the challenger (judged on a real ``make serve``'s ``/metrics``),
and again after ``rollback``: ``make serve`` (the Makefile target itself) serves the new
champion, the serving benchmark finds it, and the archive ``docker build`` takes by default is
that champion's bento.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml

from benchmarks.serving import champion_deployment
from tests.support.clones import BIN, Clone
from tests.support.servers import free_port, wait_ready
from tests.support.waiting import wait_until

VENV_STAMP = BIN.parent / ".installed"


def make_serve(repo: Clone, log: Path) -> tuple[subprocess.Popen, str]:
    """``make serve`` in the clone, with this test run's venv (``-o``: do not reinstall it)."""
    port = free_port()
    command = ["make", "-o", str(VENV_STAMP), "serve", f"VENV={BIN.parent}", f"PORT={port}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=repo.path, env=repo.env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def records(repo: Clone, count: int) -> list[dict]:
    contract = yaml.safe_load((repo.path / "contracts/adult.yaml").read_text(encoding="utf-8"))
    inputs = [name for name, spec in contract["columns"].items() if spec["role"] != "target"]
    test = pd.read_parquet(repo.path / "data/features/test.parquet").head(count)
    return json.loads(test[inputs].to_json(orient="records"))


def served_versions(url: str, rows: list[dict], keys: int) -> dict[str, int]:
    """Model versions that answered one request per routing key (all must answer 200).

    ``make serve`` is open (no API keys), so each request's routing key is the service's own
    request id: ``keys`` requests are ``keys`` routing keys.
    """
    seen: dict[str, int] = {}
    with requests.Session() as session:
        for i in range(keys):
            response = session.post(f"{url}/predict", json={"records": [rows[i % len(rows)]]},
                                    timeout=30)
            assert response.status_code == 200, response.text
            version = response.json()[0]["model_version"]
            seen[version] = seen.get(version, 0) + 1
    return seen


def archived_bento(archive: Path) -> str:
    """The bento tag inside an exported archive (its bento.yaml)."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "bento.yaml")
        info = yaml.safe_load(tar.extractfile(member).read())
    return f"{info['name']}:{info['version']}"


def assert_every_consumer_follows(repo: Clone, version: str, tmp: Path, rows: list[dict]) -> None:
    record = repo.json("deployments/champion.json")
    champion = record["champion"]
    assert champion["model_version"] == version and champion["bento_tag"] and champion["model_tag"]
    assert champion_deployment(repo.path) == champion  # the serving benchmark's lookup
    dockerfile = (repo.path / "Dockerfile").read_text(encoding="utf-8")
    default_archive = re.search(r"^ARG BENTO_ARCHIVE=(\S+)$", dockerfile, re.M).group(1)
    assert champion["archive"] == default_archive == "models/serving/champion.bento"
    assert archived_bento(repo.path / default_archive) == champion["bento_tag"]
    process, url = make_serve(repo, tmp / f"make-serve-v{version}.log")
    try:
        assert served_versions(url, rows, 40) == {version: 40}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def repo(make_clone) -> Clone:
    """Champion v1 deployed directly, then v2 started as a canary by ``deploy.strategy: canary``."""
    clone = make_clone("canary", user="canary-tests")
    clone.dvc("repro")
    params = clone.params()
    params["deploy"].update(strategy="canary", canary_share=0.3, canary_max_latency_ratio=100.0)
    params["train"]["seed"] = 7  # another model
    params["gate"]["change_thresholds"]["roc_auc"]["absolute"] = -1.0  # bless it whatever it scores
    clone.write_params(params)
    clone.dvc("repro")
    return clone


def test_canary_promotion_then_rollback(repo: Clone, tmp_path: Path) -> None:
    record = repo.json("deployments/champion.json")
    assert record["champion"]["model_version"] == "1"
    assert record["challenger"]["model_version"] == "2"
    assert record["challenger"]["archive"] == "models/serving/challenger.bento"
    assert repo.json("deployments/routing.json")["challenger"]["model_version"] == "2"
    rows = records(repo, 50)

    process, url = make_serve(repo, tmp_path / "make-serve-canary.log")
    try:
        split = served_versions(url, rows, 200)
        assert set(split) == {"1", "2"} and split["2"] >= 20, split
        decided = repo.python("-m", "mlops_template", "canary", "decide", "--metrics-url", f"{url}/metrics",
                              "--min-requests", "20")
        assert json.loads(decided.stdout.strip().splitlines()[-1])["action"] == "promote", decided.stdout
        wait_until(lambda: served_versions(url, rows, 10) == {"2": 10}, 30, 0.5,
                   "the service switched to v2")  # the running service follows the routing file
    finally:
        stop(process)
    assert repo.json("deployments/champion.json")["challenger"] is None
    assert not (repo.path / "models/serving/challenger.bento").exists()
    assert_every_consumer_follows(repo, "2", tmp_path, rows)

    rolled = repo.python("-m", "mlops_template", "rollback", "--reason", "test")
    assert json.loads(rolled.stdout.strip().splitlines()[-1])["to_version"] == "1", rolled.stdout
    assert_every_consumer_follows(repo, "1", tmp_path, rows)
    assert [e["action"] for e in repo.history()][-3:] == ["canary_start", "canary_promote", "rollback"]
