"""A label flip aimed at one group is refused by the gate; a clean batch is still promoted; a
champion whose registry artifact is not the deployed one is refused before it is loaded.

One clone, in file order: baseline (champion v1) and a golden set frozen by the command a person
runs -> a clean batch promoted (v2) -> a batch with every woman earning >50K relabelled <=50K
refused (v3), champion v2 unchanged, the report naming the slice -> the registry's v2 artifact
swapped for v1's (with its own .sha256) and then the alias moved: evaluate refuses both.

The batches join ``data/raw`` directly and ``dvc repro`` runs, as the retrain command does after
its guard accepted a batch: this exercises the gate alone, whatever the guard would have said.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from mlops_template.core.exitcodes import ExitCode
from tests.support.clones import Clone

NAME = "adult-income"
HOLD_BACK = 0.35
CLEAN_ROWS, POISON_ROWS = 4000, 6000


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(path: Path, frame: pd.DataFrame) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False)
    return path


@pytest.fixture(scope="module")
def repo(request, tmp_path_factory) -> Clone:
    """Raw data split (65% kept, then a clean and a poisoned batch), pipeline run, golden set frozen."""
    base = tmp_path_factory.mktemp("poison")
    clone = Clone.create(base / "repo", user="poison-tests")
    raw = clone.path / "data/raw/adult.csv.gz"
    rows = _read(raw)
    keep = len(rows) - int(len(rows) * HOLD_BACK)
    held = rows.iloc[keep:].reset_index(drop=True)
    _write(raw, rows.iloc[:keep])
    clone.clean = _write(base / "clean.csv.gz", held.iloc[:CLEAN_ROWS])
    poison = held.iloc[CLEAN_ROWS:CLEAN_ROWS + POISON_ROWS].copy()
    target = (poison["sex"].str.strip() == "Female") & (poison["income"].str.strip() == ">50K")
    clone.flipped = int(target.sum())
    poison.loc[target, "income"] = poison.loc[target, "income"].str.replace(">50K", "<=50K")
    clone.poison = _write(base / "poison.csv.gz", poison)
    clone.git("add", "-A")
    clone.git("commit", "--quiet", "-m", "test setup: hold back two batches")
    clone.dvc("repro")
    proc = clone.python("-m", "mlops_template", "golden", "freeze", "--reason", "first model deployed")
    assert "golden set:" in proc.stdout
    clone.git("add", "-A")
    clone.git("commit", "--quiet", "-m", "baseline and golden set")
    yield clone
    if request.session.testsfailed == 0:
        shutil.rmtree(base, ignore_errors=True)


def champion_version(repo: Clone) -> str:
    return str(repo.mlflow_client().get_model_version_by_alias(NAME, "champion").version)


def test_golden_set_is_fixed_by_the_command_and_tracked_by_dvc(repo: Clone):
    manifest = repo.json("data/golden/manifest.json")
    assert manifest["frozen_by"] == "poison-tests" and manifest["reason"] == "first model deployed"
    assert manifest["rows"] == len(pd.read_parquet(repo.path / "data/features/test.parquet"))
    assert (repo.path / "data/golden/golden.parquet.dvc").exists()
    assert "golden.parquet" in (repo.path / "data/golden/.gitignore").read_text()
    again = repo.python("-m", "mlops_template", "golden", "freeze", check=False)
    assert again.returncode == ExitCode.BAD_INPUT and "--replace" in again.stderr


def test_clean_batch_is_promoted_and_gate_shows_both_sets(repo: Clone):
    golden_before = repo.json("data/golden/manifest.json")["sha256"]
    shutil.copy(repo.clean, repo.path / "data/raw" / repo.clean.name)

    repo.dvc("repro")

    gate = repo.json("metrics/gate.json")
    assert gate["blessed"], gate["reasons"]
    assert champion_version(repo) == "2"
    assert gate["champion"]["metrics"]["roc_auc"] > 0.85            # on the rolling test set
    assert gate["golden"]["champion"]["roc_auc"] > 0.85             # on the golden set
    assert gate["golden"]["challenger"]["n"] == gate["golden"]["rows"]
    kinds = {c["kind"] for c in gate["checks"] if c["passed"]}
    assert {"change", "golden_change", "slice", "answer_change"} <= kinds, kinds
    assert repo.json("data/golden/manifest.json")["sha256"] == golden_before
    print(f"\ngolden-set scoring in the gate (clean batch): {gate['golden']['seconds']:.2f} s "
          f"for {gate['golden']['rows']} rows, both models")


def test_targeted_label_flip_is_refused_naming_the_slice(repo: Clone):
    record_before = repo.json("deployments/champion.json")["champion"]
    shutil.copy(repo.poison, repo.path / "data/raw" / repo.poison.name)

    started = time.monotonic()
    repo.dvc("repro")
    seconds = time.monotonic() - started

    gate = repo.json("metrics/gate.json")
    assert gate["candidate"]["model_version"] == "3"
    assert not gate["blessed"], gate["reasons"]
    assert any("slice sex=Female" in r for r in gate["reasons"]), gate["reasons"]
    assert champion_version(repo) == "2"
    assert repo.json("deployments/champion.json")["champion"] == record_before
    assert repo.history()[-1]["action"] == "reject"
    report = repo.json("metrics/golden.json")
    women = next(s for s in report["slices"] if (s["column"], s["value"]) == ("sex", "Female"))
    recall = next(s for s in report["served_recall"] if (s["column"], s["value"]) == ("sex", "Female"))
    changes = report["answer_changes"]["golden set"]["groups"]
    assert changes[0]["examples"], changes[0]
    print(f"\npoisoned batch: {repo.flipped} rows relabelled; gate reasons: {gate['reasons']}"
          f"\nrecall of women earning >50K on the golden set (served thresholds): champion {recall['champion']:.3f} "
          f"-> poisoned candidate {recall['candidate']:.3f}; soft recall {women['champion']:.3f} -> "
          f"{women['candidate']:.3f} (z {women['z']:.1f}); most concentrated change: {changes[0]['column']}="
          f"{changes[0]['value']} shift {changes[0]['shift']:+.4f} (z {changes[0]['z']:+.1f});"
          f" dvc repro {seconds:.0f} s; golden scoring {gate['golden']['seconds']:.2f} s")


def _package_of(repo: Clone, version: str) -> Path:
    run = repo.mlflow_client().get_model_version(NAME, version).run_id
    found = [p for p in (repo.path / "mlruns").rglob("package/model.skops") if run in str(p)]
    assert len(found) == 1, found
    return found[0]


def test_evaluate_refuses_a_registry_champion_that_is_not_the_deployed_one(repo: Clone):
    record = repo.json("deployments/champion.json")["champion"]
    v2, v1 = _package_of(repo, "2"), _package_of(repo, "1")
    saved = {p: p.read_bytes() for p in (v2, Path(f"{v2}.sha256"))}
    shutil.copy(v1, v2)  # a registry writer swaps the bytes and the checksum beside them
    shutil.copy(f"{v1}.sha256", f"{v2}.sha256")
    tampered = repo.python("-m", "stages.evaluate", check=False)
    for path, content in saved.items():
        path.write_bytes(content)

    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert record["sha256"] in tampered.stderr and repo.json("deployments/champion.json")["champion"] == record
    from tests.support.clones import sha256

    assert sha256(v1) in tampered.stderr and "refusing to load it" in tampered.stderr
    assert "scored ROC AUC" not in tampered.stderr
    gate = repo.json("metrics/gate.json")
    assert not gate["blessed"] and gate["reasons"][0].startswith("error: champion refused")

    repo.mlflow_client().set_registered_model_alias(NAME, "champion", "1")  # the alias moved behind the record
    moved = repo.python("-m", "stages.evaluate", check=False)
    repo.mlflow_client().set_registered_model_alias(NAME, "champion", "2")
    assert moved.returncode == 1 and "is not the deployed champion v2" in moved.stderr, moved.stderr
