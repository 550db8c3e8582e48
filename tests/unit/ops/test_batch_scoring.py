"""Offline batch scoring (``mlops-template score``): every task, rejected rows, ids, formats, chunks, trust.

Models are trained here on public data (Adult for binary, sklearn's wine for multiclass and
diabetes for regression) and saved as real model packages (skops, checksum, spec, card,
contract); expected answers come from the same in-memory pipeline through the task interface.
The champion is read from a real BentoML store through the real command line in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template import cli
from mlops_template.core.artifacts import CARD_TYPES_KEY, ModelIntegrityError, model_types, save_model
from mlops_template.core.contract import Contract, contract_from_dict
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.features import FeatureSpec, build_features, feature_spec_from
from mlops_template.core.io import write_json
from mlops_template.core.package_files import (
    CONTRACT_FILE,
    FEATURE_SPEC_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    SERVING_FILE,
)
from mlops_template.core.tasks import Task, task_of
from mlops_template.ops import records
from mlops_template.ops.batch_files import read_chunks
from mlops_template.ops.batch_model import load_package, local_model
from mlops_template.ops.batch_scoring import score_file
from mlops_template.pipeline.tracking import PACKAGE_ARTIFACT
from tests.support.servers import clean_env

REPO = Path(__file__).resolve().parents[3]
ROWS = 300
THRESHOLD = 0.4  # binary: not the task's default 0.5, so a test sees which threshold labelled


@dataclass
class Case:
    """A trained model package of one task and rows to score with it."""

    task: Task
    contract: Contract
    spec: FeatureSpec
    pipeline: Pipeline
    package: Path
    rows: pd.DataFrame  # typed input rows (target included), all valid
    threshold: float | None

    def expected(self, rows: pd.DataFrame) -> list[dict]:
        """What the task answers for ``rows`` straight from the in-memory pipeline."""
        return self.task.answers(self.task.predict(self.pipeline, build_features(rows, self.spec)), self.threshold)


def small_pipeline(spec: FeatureSpec, estimator) -> Pipeline:
    """Imputation, scaling and encoding in front of ``estimator``: the types a trained package holds."""
    parts = [("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
              spec.numeric_columns)]
    if spec.categorical:
        parts.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=False))]),
            list(spec.categorical)))
    return Pipeline([("preprocess", ColumnTransformer(parts, verbose_feature_names_out=False)),
                     ("estimator", estimator)])


def write_package(directory: Path, pipeline: Pipeline, spec: FeatureSpec, contract_raw: dict, task: Task,
                  threshold: float | None, version: str = "7") -> Path:
    """A model package as training and packaging write it (a BentoML model's folder holds the same)."""
    directory.mkdir(parents=True)
    digest = save_model(pipeline, directory / MODEL_FILE)
    spec.to_json(directory / FEATURE_SPEC_FILE)
    write_json(directory / MODEL_CARD_FILE, {"task": task.name, "classes": list(task.classes), "sha256": digest,
                                             CARD_TYPES_KEY: model_types(directory / MODEL_FILE)})
    (directory / CONTRACT_FILE).write_text(yaml.safe_dump(contract_raw, sort_keys=False), encoding="utf-8")
    write_json(directory / SERVING_FILE, {"threshold": threshold, "model_version": version})
    return directory


def sklearn_case(tmp: Path, name: str) -> Case:
    """Multiclass on wine (13 numeric columns, 3 classes) or regression on diabetes (10 numeric)."""
    data = load_wine(as_frame=True) if name == "multiclass" else load_diabetes(as_frame=True, scaled=False)
    frame = data.data.copy()
    target = "cultivar" if name == "multiclass" else "progression"
    if name == "multiclass":
        frame[target] = [str(data.target_names[i]) for i in data.target]
        target_spec = {"type": "str", "role": "target", "allowed": [str(n) for n in data.target_names]}
    else:
        frame[target] = data.target.astype(float)
        target_spec = {"type": "float", "role": "target"}
    raw = {"name": f"sk-{name}", "target": {"column": target, "task": name},
           "columns": {**{c: {"type": "float", "role": "numeric", "min": 0.0} for c in data.data.columns},
                       target: target_spec}}
    contract = contract_from_dict(raw)
    task, spec = task_of(contract), feature_spec_from(contract)
    pipeline = small_pipeline(spec, task.estimator("linear", {"max_iter": 2000}, 0))
    pipeline.fit(build_features(frame, spec), task.encode(frame[target]))
    package = write_package(tmp / name, pipeline, spec, raw, task, None)
    return Case(task, contract, spec, pipeline, package, frame.reset_index(drop=True), None)


@pytest.fixture(scope="module")
def cases(tmp_path_factory, trained, spec, contract, params) -> dict[str, Case]:
    """One trained package per task."""
    tmp = tmp_path_factory.mktemp("packages")
    pipeline, test, _ = trained
    raw = yaml.safe_load((REPO / params["data"]["contract"]).read_text(encoding="utf-8"))
    binary = Case(task_of(contract), contract, spec, pipeline,
                  write_package(tmp / "binary", pipeline, spec, raw, task_of(contract), THRESHOLD),
                  test.head(ROWS).reset_index(drop=True), THRESHOLD)
    return {"binary": binary, **{name: sklearn_case(tmp, name) for name in ("multiclass", "regression")}}


ANSWER_COLUMNS = {
    "binary": lambda case: ["probability", "label"],
    "multiclass": lambda case: ["label", *(f"probabilities.{c}" for c in case.task.classes)],
    "regression": lambda case: ["prediction"],
}


def write_input(frame: pd.DataFrame, path: Path) -> None:
    """Rows as a client's file: CSV (missing values as the contract's "?") or parquet (one row group)."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False, na_rep="?")
    else:
        frame.to_parquet(path, index=False, row_group_size=len(frame))


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""], float_precision="round_trip")


def inputs_of(case: Case, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows without their target, as a client sends them."""
    return rows.drop(columns=[case.contract.target])


def assert_answers(case: Case, scored: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Each scored row holds exactly what the task answers for it from the in-memory pipeline."""
    expected = case.expected(rows)
    assert list(scored.columns[1:]) == [*ANSWER_COLUMNS[case.task.name](case), "model_version"]
    assert len(scored) == len(expected)
    for column in ANSWER_COLUMNS[case.task.name](case):
        key, _, sub = column.partition(".")
        want = [a[key][sub] if sub else a[key] for a in expected]
        if scored[column].dtype.kind == "f":
            np.testing.assert_allclose(scored[column].to_numpy(), want, rtol=1e-12, atol=0)
        else:
            assert scored[column].astype(str).tolist() == [str(w) for w in want], column
    assert set(scored["model_version"].astype(str)) == {"7"}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_task_is_scored_as_the_model_answers(cases, tmp_path, task):
    case = cases[task]
    source = tmp_path / "in.csv"
    inputs_of(case, case.rows).to_csv(source, index=False, na_rep="?")
    summary = score_file(source, tmp_path / "out.csv", tmp_path / "bad.csv", local_model(case.package))
    scored = read(tmp_path / "out.csv")
    assert (summary.rows, summary.scored, summary.rejected) == (len(case.rows), len(case.rows), 0)
    assert scored["row"].tolist() == list(range(1, len(case.rows) + 1))
    assert_answers(case, scored, case.rows)
    assert read(tmp_path / "bad.csv").empty


def corrupted(case: Case) -> tuple[pd.DataFrame, dict[int, list[tuple[str, str, str]]]]:
    """Adult rows as strings with known faults: position -> [(column, check it fails, value)]."""
    frame = inputs_of(case, case.rows).head(40).astype("string").astype(object)
    faults = {3: [("age", "in_range", "150")], 5: [("workclass", "isin", "Astronaut")],
              8: [("hours_per_week", "coerce_dtype", "lots"), ("hours_per_week", "dtype", "lots")],
              11: [("age", "in_range", "200"), ("sex", "isin", "X")]}
    for position, failures in faults.items():
        for column, _, value in failures:
            frame.loc[position, column] = value
    return frame, faults


def test_rejected_rows_are_not_scored_and_name_column_check_and_value(cases, tmp_path):
    case = cases["binary"]
    frame, faults = corrupted(case)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False, na_rep="?")
    summary = score_file(source, tmp_path / "out.csv", tmp_path / "bad.csv", local_model(case.package))
    assert (summary.rows, summary.scored, summary.rejected) == (40, 36, 4)
    bad = read(tmp_path / "bad.csv")
    assert list(bad.columns) == ["row", "column", "check", "value"]
    seen = sorted(zip(bad["row"], bad["column"], bad["check"].str.split("(").str[0], bad["value"].astype(str),
                      strict=True))
    assert seen == sorted((p + 1, c, k, v) for p, failures in faults.items() for c, k, v in failures)
    age = next(c for c in case.contract.columns if c.name == "age")
    assert bad.loc[bad["check"].str.startswith("in_range"), "check"].tolist() == [f"in_range({age.min}, {age.max})"] * 2
    scored = read(tmp_path / "out.csv")
    kept = [p for p in range(40) if p not in faults]
    assert scored["row"].tolist() == [p + 1 for p in kept]
    assert_answers(case, scored, case.rows.iloc[kept])


def test_an_id_column_names_the_rows_of_both_files(cases, tmp_path):
    case = cases["binary"]
    frame, faults = corrupted(case)
    frame.insert(0, "customer_id", [f"C-{1000 + i}" for i in range(len(frame))])
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False, na_rep="?")
    score_file(source, tmp_path / "out.csv", tmp_path / "bad.csv", local_model(case.package), id_column="customer_id")
    scored, bad = read(tmp_path / "out.csv"), read(tmp_path / "bad.csv")
    assert scored.columns[0] == "customer_id" and "row" not in scored.columns
    assert scored["customer_id"].tolist() == [f"C-{1000 + p}" for p in range(len(frame)) if p not in faults]
    assert list(bad.columns[:2]) == ["customer_id", "row"]
    assert set(zip(bad["customer_id"], bad["row"], strict=True)) == {(f"C-{1000 + p}", p + 1) for p in faults}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_parquet_in_or_out_gives_the_same_answers_as_csv(cases, tmp_path, task):
    case = cases[task]
    frame = inputs_of(case, case.rows)
    frame.to_csv(tmp_path / "in.csv", index=False, na_rep="?")
    frame.to_parquet(tmp_path / "in.parquet", index=False)  # typed columns, not strings
    model = local_model(case.package)
    score_file(tmp_path / "in.csv", tmp_path / "a.csv", tmp_path / "a-bad.csv", model)
    score_file(tmp_path / "in.parquet", tmp_path / "b.parquet", tmp_path / "b-bad.parquet", model)
    from_csv, from_parquet = read(tmp_path / "a.csv"), read(tmp_path / "b.parquet")
    assert_answers(case, from_parquet, case.rows)
    pd.testing.assert_frame_equal(from_csv.drop(columns="model_version"),
                                  from_parquet.drop(columns="model_version"), check_dtype=False, check_exact=True)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_small_chunks_give_exactly_what_one_chunk_gives(cases, tmp_path, task, kind):
    case = cases[task]
    frame = inputs_of(case, case.rows).astype("string").astype(object)
    bad_column = case.spec.numeric[0]
    frame.loc[[2, 9, 150], bad_column] = "-5"  # out of range in every contract here (min 0 or the Adult range)
    source = tmp_path / f"in.{kind}"
    write_input(frame, source)
    model = local_model(case.package)
    whole = score_file(source, tmp_path / "one.parquet", tmp_path / "one-bad.parquet", model, chunk_rows=10_000)
    split = score_file(source, tmp_path / "many.parquet", tmp_path / "many-bad.parquet", model, chunk_rows=37)
    assert (whole.scored, whole.rejected) == (split.scored, split.rejected) == (len(frame) - 3, 3)
    assert whole.failures == split.failures
    # Ids, labels and reasons exactly; numbers to 1e-12: a linear model's BLAS product may round the last
    # bit differently for another number of rows (a trees-only model is bit-identical).
    pd.testing.assert_frame_equal(read(tmp_path / "one.parquet"), read(tmp_path / "many.parquet"),
                                  check_exact=False, rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(read(tmp_path / "one-bad.parquet"), read(tmp_path / "many-bad.parquet"),
                                  check_exact=True)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_input_is_read_no_more_than_a_chunk_at_a_time(cases, tmp_path, kind):
    case = cases["binary"]
    frame = inputs_of(case, case.rows)
    source = tmp_path / f"in.{kind}"
    write_input(frame, source)
    sizes = [len(chunk) for chunk in read_chunks(source, case.contract, 64)]
    assert sum(sizes) == len(frame) and max(sizes) == 64 and len(sizes) == -(-len(frame) // 64)


def test_a_binary_package_labels_with_its_recorded_threshold(cases, tmp_path):
    case = cases["binary"]
    inputs_of(case, case.rows).to_csv(tmp_path / "in.csv", index=False, na_rep="?")
    score_file(tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "bad.csv", local_model(case.package))
    scored = read(tmp_path / "out.csv")
    between = scored[(scored["probability"] >= THRESHOLD) & (scored["probability"] < 0.5)]
    assert len(between) > 0, "no row between the recorded threshold and 0.5: the check below shows nothing"
    assert set(between["label"]) == {case.contract.positive_class}


def swap_in_other_model(case: Case, directory: Path) -> None:
    """Replace a package's model with another valid one, its checksum file and card rewritten to match,
    as anyone who can write the store or registry can."""
    other = small_pipeline(case.spec, case.task.estimator("linear", {"max_iter": 500}, 0))
    other.fit(build_features(case.rows, case.spec), case.task.encode(case.rows[case.contract.target]))
    digest = save_model(other, directory / MODEL_FILE)  # rewrites model.skops.sha256 too
    write_json(directory / MODEL_CARD_FILE, {"task": case.task.name, "sha256": digest,
                                             CARD_TYPES_KEY: model_types(directory / MODEL_FILE)})


def test_a_package_whose_model_was_swapped_is_refused_against_the_recorded_digest(cases, tmp_path):
    case = cases["binary"]
    recorded = (case.package / f"{MODEL_FILE}.sha256").read_text(encoding="utf-8").split()[0]
    copy = tmp_path / "store-copy"
    shutil.copytree(case.package, copy)
    swap_in_other_model(case, copy)
    local_model(copy)  # its own checksum file vouches for the swap: that alone proves nothing
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_package(copy, recorded, source="champion")


def test_a_local_package_with_a_changed_model_file_is_refused(cases, tmp_path, scratch_cwd, capsys):
    case = cases["regression"]
    copy = tmp_path / "pkg"
    shutil.copytree(case.package, copy)
    with open(copy / MODEL_FILE, "ab") as fh:
        fh.write(b"tampered")
    inputs_of(case, case.rows).to_csv(tmp_path / "in.csv", index=False, na_rep="?")
    code = cli.main(["score", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--model", str(copy)])
    assert code == ExitCode.FAILED
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


@pytest.fixture
def scratch_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory: no deployments/champion.json, no params.yaml."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_no_champion_missing_input_and_nothing_valid_are_bad_input(cases, tmp_path, scratch_cwd, capsys):
    case = cases["binary"]
    source = tmp_path / "in.csv"
    inputs_of(case, case.rows).head(5).to_csv(source, index=False, na_rep="?")
    assert cli.main(["score", str(source), "--output", str(tmp_path / "o.csv")]) == ExitCode.BAD_INPUT
    assert "no champion is recorded" in capsys.readouterr().err
    missing = ["score", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv"), "--model", str(case.package)]
    assert cli.main(missing) == ExitCode.BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    frame = inputs_of(case, case.rows).head(5).astype("string").astype(object)
    frame["age"] = "999"
    frame.to_csv(source, index=False, na_rep="?")
    every_row_bad = ["score", str(source), "--output", str(tmp_path / "o.csv"), "--model", str(case.package)]
    assert cli.main(every_row_bad) == ExitCode.BAD_INPUT
    assert "scored 0 of 5 rows, rejected 5" in capsys.readouterr().err
    assert len(read(tmp_path / "o.rejected.csv")) == 5
    frame.drop(columns=["age"]).to_csv(source, index=False, na_rep="?")
    assert cli.main(every_row_bad) == ExitCode.BAD_INPUT
    assert "missing column(s) ['age']" in capsys.readouterr().err


def test_a_record_without_a_digest_is_refused_before_any_store_is_read(cases, tmp_path, scratch_cwd, capsys):
    champion = {field: "" for field in records.DEPLOYMENT_FIELDS} | {"model_name": "m", "model_version": "3",
                                                                    "sha256": None, "model_tag": "m:abc"}
    write_json(scratch_cwd / "deployments" / "champion.json", {"champion": champion})
    source = tmp_path / "in.csv"
    inputs_of(cases["binary"], cases["binary"].rows).head(5).to_csv(source, index=False, na_rep="?")
    assert cli.main(["score", str(source), "--output", str(tmp_path / "o.csv")]) == ExitCode.FAILED
    assert "records no sha256" in capsys.readouterr().err


SAVE_TO_STORE = """
import sys
from pathlib import Path
from mlops_template.core.io import sha256_of
from mlops_template.pipeline.packaging import save_bento_model
model_dir = Path(sys.argv[1])
serving = {"threshold": 0.5, "positive_class": ">50K", "negative_class": "<=50K", "model_version": "7"}
print(save_bento_model(model_dir, model_dir / "contract.yaml", serving, "adult-income", {"model_version": "7"},
                       sha256_of(model_dir / "model.skops")))
"""


def test_the_command_scores_the_recorded_champion_from_the_store_and_refuses_a_swapped_one(cases, tmp_path):
    case = cases["binary"]
    work, home = tmp_path / "project", tmp_path / "bentoml"
    work.mkdir()
    env = clean_env({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(REPO)})
    saved = subprocess.run([sys.executable, "-c", SAVE_TO_STORE, str(case.package)], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300, check=True)
    tag = saved.stdout.strip().splitlines()[-1]
    digest = (case.package / f"{MODEL_FILE}.sha256").read_text(encoding="utf-8").split()[0]
    champion = records.deployment(model_name="adult-income", model_version="7", mlflow_run_id="0" * 32,
                                  bento_tag="adult_income_service:x", model_tag=tag, archive="", archive_sha256="",
                                  sha256=digest, threshold=THRESHOLD, test_roc_auc=0.9, git_revision="",
                                  deployed_at="2026-12-03T00:00:00+00:00")
    write_json(work / "deployments" / "champion.json", {"champion": champion})
    frame, faults = corrupted(case)
    frame.insert(0, "customer_id", [f"C-{i}" for i in range(len(frame))])
    frame.to_csv(work / "batch.csv", index=False, na_rep="?")
    command = [sys.executable, "-m", "mlops_template", "score", "batch.csv", "--output", "out/scores.parquet",
               "--id-column", "customer_id", "--chunk-rows", "16"]

    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.OK, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"scored 36 of 40 rows, rejected {len(faults)} (")
    assert f"champion adult-income v7 from the BentoML store ({tag})" in summary
    assert "verified against deployments/champion.json" in summary and f"threshold {THRESHOLD:g}" in summary
    scored = pd.read_parquet(work / "out" / "scores.parquet")
    kept = [p for p in range(40) if p not in faults]
    assert scored["customer_id"].tolist() == [f"C-{p}" for p in kept]
    assert_answers(case, scored, case.rows.iloc[kept])
    assert len(pd.read_parquet(work / "out" / "scores.rejected.parquet")) == 6  # two rows fail two checks

    stored = Path(json.loads(subprocess.run(
        [sys.executable, "-c", f"import bentoml, json; print(json.dumps(bentoml.models.get({tag!r}).path))"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, check=True).stdout))
    swap_in_other_model(case, stored)
    (work / "out" / "scores.parquet").unlink()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.FAILED, done.stdout + done.stderr
    assert "sha256" in done.stderr and "refusing to load" in done.stderr, done.stderr
    assert not (work / "out" / "scores.parquet").exists()


LOG_TO_MLFLOW = """
import sys
from pathlib import Path
import mlflow
from mlops_template.core.params import load
from mlops_template.pipeline import tracking
tracking.connect(load().mlflow)
with mlflow.start_run() as run:
    mlflow.log_artifacts(sys.argv[1], artifact_path=tracking.PACKAGE_ARTIFACT)
print(run.info.run_id)
"""


def test_a_champion_missing_from_the_store_is_fetched_from_mlflow_and_verified(cases, tmp_path):
    case = cases["binary"]
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    shutil.copytree(REPO / "contracts", work / "contracts")
    trained = tmp_path / "trained"  # what the train stage logs: no contract, no serving.json
    trained.mkdir()
    for name in (MODEL_FILE, f"{MODEL_FILE}.sha256", FEATURE_SPEC_FILE, MODEL_CARD_FILE):
        shutil.copy(case.package / name, trained / name)
    env = clean_env({"BENTOML_HOME": str(tmp_path / "empty-store"), "BENTOML_DO_NOT_TRACK": "true",
                     "MLFLOW_ENABLE_TELEMETRY": "false", "PYTHONPATH": str(REPO)})
    logged = subprocess.run([sys.executable, "-c", LOG_TO_MLFLOW, str(trained)], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr
    run_id = logged.stdout.strip().splitlines()[-1]
    digest = (trained / f"{MODEL_FILE}.sha256").read_text(encoding="utf-8").split()[0]
    champion = records.deployment(model_name="adult-income", model_version="7", mlflow_run_id=run_id,
                                  bento_tag="adult_income_service:x", model_tag="adult-income:notinthestore",
                                  archive="", archive_sha256="", sha256=digest, threshold=THRESHOLD,
                                  test_roc_auc=0.9, git_revision="", deployed_at="2026-12-03T00:00:00+00:00")
    write_json(work / "deployments" / "champion.json", {"champion": champion})
    inputs_of(case, case.rows).head(50).to_csv(work / "batch.csv", index=False, na_rep="?")
    command = [sys.executable, "-m", "mlops_template", "score", "batch.csv", "--output", "scores.csv"]

    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.OK, done.stderr
    assert f"from MLflow run {run_id}" in done.stdout and f"threshold {THRESHOLD:g}" in done.stdout
    assert_answers(case, read(work / "scores.csv"), case.rows.head(50))

    logged_model = next((work / "mlruns").rglob(f"{PACKAGE_ARTIFACT}/{MODEL_FILE}"))
    swap_in_other_model(case, logged_model.parent)
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.FAILED and "refusing to load" in done.stderr, done.stdout + done.stderr
