"""Poisoned batches through ``python -m mlops_template retrain`` in a fresh clone.

One clone: the baseline holds back the last 25% of ``adult.csv.gz`` as two batches and trains
champion v1. A targeted flip and a backdoor, both built from held-back rows, are quarantined with
reports naming the check that stopped each, and the champion stays v1; then a held-back batch,
untouched, is accepted and promoted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops_template.core.contract import load_contract, read_raw_csv
from mlops_template.core.exitcodes import ExitCode
from mlops_template.ops.guard import Accepted
from mlops_template.pipeline.validation import validate_frame
from tests.support.clones import Clone
from tests.support.guard_attacks import backdoor, targeted_flip
from tests.support.guard_data import adult
from tests.support.retrain_helpers import baseline_clone, last_json_line

RETRAIN = ("-m", "mlops_template", "retrain")
NAME = "adult-income"


@pytest.fixture(scope="module")
def repo(request, tmp_path_factory) -> Clone:
    """A clone with two batches held back and champion v1 trained on the rest, committed."""
    base = tmp_path_factory.mktemp("poison")
    clone = baseline_clone(base, "poison-tests")
    yield clone
    if request.session.testsfailed == 0:
        shutil.rmtree(base, ignore_errors=True)


def write_batch(path: Path, frame: pd.DataFrame) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False, na_rep="?")
    return path


def champion(repo: Clone) -> str:
    return str(repo.mlflow_client().get_model_version_by_alias(NAME, "champion").version)


def test_poisoned_batches_are_quarantined_and_the_champion_is_unchanged(repo: Clone):
    contract = load_contract(repo.path / "contracts/adult.yaml")
    data = adult()
    held = read_raw_csv(repo.batches[1], contract)
    accepted = Accepted.from_frame(validate_frame(read_raw_csv(repo.path / "data/raw/adult.csv.gz", contract),
                                                  contract).valid, contract)
    incoming = repo.path / "data/incoming"
    flip = write_batch(incoming / "2026-12-01-flip.csv.gz", targeted_flip(held, data))
    trigger = write_batch(incoming / "2026-12-02-trigger.csv.gz", backdoor(held.iloc[::-1].reset_index(drop=True),
                                                                            data, accepted, 250))
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (flip, trigger)}
    lock_before = (repo.path / "dvc.lock").read_bytes()

    proc = repo.python(*RETRAIN, check=False)

    assert proc.returncode == ExitCode.QUARANTINED, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last_json_line(proc.stdout)["status"] == "quarantined"
    quarantine = repo.path / "data/quarantine/batches"
    for name, check in ((flip.name, "label_by_group"), (trigger.name, "trigger")):
        report = json.loads((quarantine / f"{name}.report.json").read_text())
        assert check in [r.split(":")[0] for r in report["reasons"]], report["reasons"]
        assert report["provenance"]["sha256"] == digests[name]
        assert report["provenance"]["user"] == "Poison Tests"
        assert report["provenance"]["command"] == "python -m mlops_template retrain"
        assert not (repo.path / "data/raw" / name).exists()
    assert (repo.path / "dvc.lock").read_bytes() == lock_before
    assert champion(repo) == "1"


def test_a_clean_batch_is_accepted_and_promoted(repo: Clone):
    shutil.copy(repo.batches[0], repo.path / "data/incoming" / repo.batches[0].name)

    proc = repo.python(*RETRAIN, "--commit", check=False)

    summary = last_json_line(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [a["batch"] for a in summary["accepted"]] == [repo.batches[0].name]
    assert summary["status"] == "promoted", summary
    assert champion(repo) == "2"
    report = repo.json(f"metrics/ingest/{repo.batches[0].name}.report.json")
    assert report["accepted"] and report["provenance"]["command"] == "python -m mlops_template retrain --commit"
    window = repo.json("metrics/ingest/reference-window.json")
    assert [f["name"] for f in window["files"]] == ["adult.csv.gz"]
