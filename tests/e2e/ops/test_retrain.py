"""Continuous training end to end, in a fresh clone: guard, retrain, gate, history, rollback, lock.

One clone is shared by the module and the tests run in file order, each building on the state
the previous one left: quarantine (no training) -> a good batch retrained while a second run is
locked out -> a worse challenger rejected -> rollback to the previous champion.

The baseline holds back the last 25% of ``adult.csv.gz`` as two batches that arrive later.
The gate keeps its change threshold throughout: the split is by row hash, so the champion is
never scored on rows it was trained on when a retrain adds data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mlops_template.core.exitcodes import ExitCode
from tests.support.clones import Clone
from tests.support.retrain_helpers import baseline_clone, last_json_line
from tests.support.waiting import poll

RETRAIN = ("-m", "mlops_template", "retrain")
NAME = "adult-income"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repo(request, tmp_path_factory) -> Clone:
    """A clone with the raw data split, the pipeline reproduced once (champion v1) and committed."""
    base = tmp_path_factory.mktemp("retrain")
    clone = baseline_clone(base, "retrain-tests")
    assert clone.json("deployments/champion.json")["champion"]["model_version"] == "1"
    yield clone
    if request.session.testsfailed == 0:  # keep the clone of a failed run for inspection
        shutil.rmtree(base, ignore_errors=True)


def write_batch(path: Path, frame: pd.DataFrame) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False)
    return path


def test_bad_batches_are_quarantined_and_never_reach_raw(repo: Clone):
    good = pd.read_csv(repo.batches[1], dtype=str, keep_default_na=False)
    accepted = pd.read_csv(repo.path / "data/raw/adult.csv.gz", dtype=str, keep_default_na=False)
    flipped = good.assign(income=good["income"].map({" <=50K": " >50K", " >50K": " <=50K"}))
    duplicates = pd.concat([good.head(300), accepted.sample(700, random_state=1)])
    out_of_range = good.assign(age=" 150")
    incoming = repo.path / "data/incoming"  # in git, holding only its README
    assert sorted(p.name for p in incoming.iterdir()) == ["README.md"]
    # Every label flipped also moves the label share of each group, and copies real rows' inputs
    # with another label: the joint checks name it too.
    expected = {"flipped.csv.gz": ["label_shift", "label_by_group", "label_flips"],
                "duplicates.csv.gz": ["duplicates"], "range.csv.gz": ["invalid"]}
    for name, frame in zip(expected, (flipped, duplicates, out_of_range), strict=True):
        write_batch(incoming / name, frame)
    lock_before = sha256(repo.path / "dvc.lock")

    proc = repo.python(*RETRAIN, check=False)

    assert proc.returncode == ExitCode.QUARANTINED, proc.stdout + proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["status"] == "quarantined" and len(summary["quarantined"]) == 3
    quarantine = repo.path / "data/quarantine/batches"
    for name, check in expected.items():
        report = json.loads((quarantine / f"{name}.report.json").read_text())
        assert (quarantine / name).exists() and not (incoming / name).exists()
        assert not (repo.path / "data/raw" / name).exists()
        assert [r.split(":")[0] for r in report["reasons"]] == check, report["reasons"]
    assert sha256(repo.path / "dvc.lock") == lock_before
    assert repo.dvc("status", "--json").stdout.strip() in ("{}", "")


def test_good_batch_retrains_while_a_second_run_is_locked_out(repo: Clone):
    """Two retrains start at once: one trains on the new batch and commits, the other exits 75."""
    versions_before = len(repo.mlflow_client().search_model_versions(f"name='{NAME}'"))
    shutil.copy(repo.batches[0], repo.path / "data/incoming" / repo.batches[0].name)

    started = time.monotonic()
    logs = [repo.path.parent / f"retrain-{i}.log" for i in range(2)]
    procs = [repo.popen(log, sys.executable, *RETRAIN, "--commit") for log in logs]
    ended: dict[int, float] = {}

    def both_ended() -> bool:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - started
        return len(ended) == 2

    poll(both_ended, bool, 1200, 0.2)
    runs = {procs[i].returncode: (logs[i].read_text(), seconds) for i, seconds in ended.items()}

    assert sorted(runs) == [0, 75], {code: out[-3000:] for code, (out, _) in runs.items()}
    assert last_json_line(runs[75][0])["status"] == "locked"
    summary = last_json_line(runs[0][0])
    print(f"\nretrain wall time on one batch: {runs[0][1]:.1f} s; "
          f"the locked-out run exited after {runs[75][1]:.1f} s")

    assert summary["status"] == "promoted", summary
    assert [a["batch"] for a in summary["accepted"]] == [repo.batches[0].name]
    gate = repo.json("metrics/gate.json")
    assert gate["candidate"]["model_version"] == "2" and gate["blessed"]
    assert len(repo.mlflow_client().search_model_versions(f"name='{NAME}'")) == versions_before + 1
    assert str(repo.mlflow_client().get_model_version_by_alias(NAME, "champion").version) == "2"
    last = repo.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("promote", "1", "2")
    assert last["who"] == "retrain-tests"
    routing = repo.json("deployments/routing.json")
    assert routing["champion"] == {"model_tag": last["model_tag"], "model_version": "2",
                                   "model_sha256": last["champion"]["sha256"]}  # the record's digest
    assert repo.json("deployments/champion.json")["champion"]["model_version"] == "2"

    # The state is whole: the batch is in data/raw, nothing half-written, DVC and git agree.
    raw = sorted(p.name for p in (repo.path / "data/raw").iterdir())
    assert raw == ["adult.csv.gz", repo.batches[0].name]
    assert sha256(repo.path / "data/raw" / repo.batches[0].name) == sha256(repo.batches[0])
    assert sorted(p.name for p in (repo.path / "data/incoming").iterdir()) == ["README.md"]
    assert repo.dvc("status", "--json").stdout.strip() in ("{}", "")
    subject = repo.git("log", "-1", "--format=%s").stdout.strip()
    assert subject.startswith(f"retrain: {NAME} v2 promoted (roc_auc 0."), subject
    assert repo.git("status", "--porcelain", "--untracked-files=no").stdout == ""


def test_worse_challenger_is_not_promoted(repo: Clone):
    """One boosting iteration instead of 300 is a worse model."""
    record_before = repo.json("deployments/champion.json")["champion"]
    params = repo.params()
    params["train"]["hyperparameters"]["hist_gradient_boosting"].update(max_iter=1)
    repo.write_params(params)

    repo.dvc("repro")

    gate = repo.json("metrics/gate.json")
    candidate = repo.json("metrics/evaluation.json")
    champion = gate["champion"]["metrics"]
    assert gate["candidate"]["model_version"] == "3"
    assert candidate["roc_auc"] < champion["roc_auc"] and candidate["log_loss"] > champion["log_loss"]
    assert not gate["blessed"]
    assert str(repo.mlflow_client().get_model_version_by_alias(NAME, "champion").version) == "2"
    record = repo.json("deployments/champion.json")
    assert record["champion"] == record_before
    assert record["last_decision"]["candidate_version"] == "3" and not record["last_decision"]["blessed"]
    last = repo.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("reject", "2", "3")
    assert "roc_auc" in last["why"]
    assert repo.mlflow_client().get_model_version(NAME, "3").tags["last_action"] == "reject"
    assert repo.json("deployments/routing.json")["champion"]["model_version"] == "2"


def test_rollback_restores_the_previous_champion(repo: Clone):
    promoted_v1 = next(e for e in repo.history() if e["action"] == "promote" and e["to_version"] == "1")

    started = time.monotonic()
    proc = repo.python("-m", "mlops_template", "rollback", "--reason", "test: v2 misbehaves", "--commit")
    seconds = time.monotonic() - started
    print(f"\nrollback command wall time: {seconds:.2f} s; {proc.stdout.strip().splitlines()[0]}")

    summary = last_json_line(proc.stdout)
    assert (summary["from_version"], summary["to_version"]) == ("2", "1")
    client = repo.mlflow_client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "1").tags["last_action"] == "rollback"
    assert client.get_model_version(NAME, "2").tags["rolled_back_reason"] == "test: v2 misbehaves"
    routing = repo.json("deployments/routing.json")
    assert routing["champion"] == {"model_tag": promoted_v1["model_tag"], "model_version": "1",
                                   "model_sha256": promoted_v1["champion"]["sha256"]}
    record = repo.json("deployments/champion.json")
    assert record["champion"]["model_version"] == "1"
    assert record["champion"]["bento_tag"] == promoted_v1["bento_tag"]
    last = repo.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"], last["why"]) == \
        ("rollback", "2", "1", "test: v2 misbehaves")
    assert repo.git("log", "-1", "--format=%s").stdout.startswith(f"rollback: {NAME} v2 -> v1")
    assert seconds < 30, "a rollback must not rebuild anything"
