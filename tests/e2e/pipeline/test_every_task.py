"""Every tabular task through the README's exact steps: regression and multiclass CSVs to served models.

For each public dataset (``tests/support/task_datasets.py``), in one fresh clone shared by its tests:
the CSV goes into ``data/raw/`` (the bundled Adult file is moved aside), ``python -m mlops_template
onboard`` infers the task from the target and says so, ``dvc repro`` runs the pipeline and the gate
blesses a model better than the task's know-nothing baseline; then a real ``bentoml serve`` of the
deployed bento answers every held-out row with 200 and the offline metrics, computed again from the
answers. For one dataset of each task, a later batch goes through ``retrain`` with ``deploy.strategy:
canary``, and ``canary decide`` promotes the challenger from the running service's ``/metrics``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

from tests.support.clones import STAGES, Clone, running_stages
from tests.support.servers import start_bento_server, stop_server, wait_ready
from tests.support.task_datasets import LOWER_IS_BETTER, TASK_DATASETS, TaskDataset, class_name
from tests.support.waiting import wait_until

TASKS = ("binary", "multiclass", "regression")
RETRAINED = ("cars", "anes96")  # one dataset of each task gets a later batch
MIN_CANARY_REQUESTS = 20
CONFIGURATION_AND_OUTPUTS = ("dvc.lock", "metrics/", "deployments/", "params.yaml", "contracts/", "data/raw/",
                             "data/archive/")


@dataclass
class Adopted:
    """A clone that went through the README steps for one dataset, and what they printed and took."""

    dataset: TaskDataset
    repo: Clone
    first: pd.DataFrame
    later: pd.DataFrame | None
    printed: str
    repro_seconds: float
    figures: dict = field(default_factory=dict)

    @property
    def contract(self) -> dict:
        """The contract params.yaml points at (the one onboarding drafted)."""
        params = self.repo.params()
        return yaml.safe_load((self.repo.path / params["data"]["contract"]).read_text(encoding="utf-8"))


def adopt(make_clone, dataset: TaskDataset) -> Adopted:
    """README steps 1-3 in a fresh clone: the CSV into data/raw/, ``onboard`` (no --task), ``dvc repro``."""
    first, later = dataset.build()
    repo = make_clone(f"every-task-{dataset.name}")
    csv = f"data/raw/{dataset.name}.csv"
    first.to_csv(repo.path / csv, index=False)
    printed = repo.python("-m", "mlops_template", "onboard", csv, "--target", dataset.target).stdout
    started = time.monotonic()
    proc = repo.dvc("repro")
    seconds = time.monotonic() - started
    assert running_stages(proc.stdout + proc.stderr) == list(STAGES), proc.stdout[-3000:]
    return Adopted(dataset, repo, first, later, printed, seconds)


@pytest.fixture(scope="module")
def adopted(make_clone) -> Iterator[Callable[[str], Adopted]]:
    """One clone per dataset, made on first use and shared by the module's tests (in file order)."""
    made: dict[str, Adopted | BaseException] = {}

    def get(name: str) -> Adopted:
        if name not in made:
            try:
                made[name] = adopt(make_clone, TASK_DATASETS[name])
            except BaseException as exc:  # the later tests of this dataset fail at once, naming it
                made[name] = exc
                raise
        result = made[name]
        if isinstance(result, BaseException):
            pytest.fail(f"{name}: the README steps failed earlier ({type(result).__name__}); see that test")
        return result

    yield get
    for name, result in made.items():
        if isinstance(result, Adopted) and result.figures:
            print(f"\n{name}: {json.dumps(result.figures)}")


def input_records(contract: dict, frame: pd.DataFrame) -> list[dict]:
    """JSON-ready requests: the contract's input columns of ``frame`` (NaN becomes null)."""
    inputs = [name for name, spec in contract["columns"].items() if spec["role"] != "target"]
    return json.loads(frame[inputs].to_json(orient="records"))


def served_metrics(dataset: TaskDataset, contract: dict, frame: pd.DataFrame, answers: list[dict],
                   class_values: dict | None = None) -> dict:
    """The task's metrics computed from the service's answers for ``frame``'s rows (sklearn, not the project).

    Multiclass labels must be the most probable class, or with ``class_values`` (``evaluate.class_values``)
    the class of highest expected value; then the value per row of the served labels is returned too.
    """
    target = frame[contract["target"]["column"]]
    if dataset.task == "regression":
        predictions = np.array([a["prediction"] for a in answers], dtype=float)
        actual = target.astype(float).to_numpy()
        return {"rmse": float(np.sqrt(mean_squared_error(actual, predictions))),
                "mae": float(mean_absolute_error(actual, predictions))}
    classes = [class_name(c) for c in contract["columns"][contract["target"]["column"]]["allowed"]]
    actual = [classes.index(class_name(v)) for v in target]
    by_class = [{class_name(k): p for k, p in a["probabilities"].items()} for a in answers]
    assert all(sorted(p) == sorted(classes) for p in by_class), (classes, by_class[:3])
    probabilities = np.array([[p[c] for c in classes] for p in by_class])
    labels = [classes.index(class_name(a["label"])) for a in answers]
    metrics = {"log_loss": float(log_loss(actual, probabilities, labels=list(range(len(classes))))),
               "accuracy": float(accuracy_score(actual, np.argmax(probabilities, axis=1)))}
    if class_values is None:
        assert (np.argmax(probabilities, axis=1) == labels).all(), "a label that is not the most probable class"
        return metrics
    values = np.array([[class_values[a][p] for p in class_values] for a in class_values])
    order = [classes.index(class_name(c)) for c in class_values]  # the table's classes, in the answer's order
    table = np.zeros((len(classes), len(classes)))
    table[np.ix_(order, order)] = values
    assert ((probabilities @ table).argmax(axis=1) == labels).all(), "a label that is not of highest expected value"
    return metrics | {"value_per_row": float(table[actual, labels].mean())}


def ask_every_row(url: str, records: list[dict]) -> tuple[list[dict], list[int]]:
    """One request per row; the answers and every status code."""
    answers, codes = [], []
    with requests.Session() as session:
        for record in records:
            response = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
            codes.append(response.status_code)
            if response.status_code == 200:
                answers.append(response.json()[0])
    return answers, codes


def assert_same_metrics(dataset: TaskDataset, served: dict, evaluation: dict) -> None:
    """The metrics computed from served answers equal evaluate's (JSON carries 6 decimals)."""
    for metric in dataset.metrics:
        assert served[metric] == pytest.approx(evaluation[metric], rel=1e-4, abs=1e-5), (metric, served, evaluation)


@pytest.mark.parametrize("name", list(TASK_DATASETS))
def test_onboarding_infers_the_task_and_dvc_repro_deploys_a_model_above_the_baseline(adopted, name):
    run = adopted(name)
    dataset, repo, contract = run.dataset, run.repo, run.contract

    # Onboarding said which task it chose, and the contract records it (with the classes for multiclass).
    said = re.findall(rf"(?<![-\w])task ({'|'.join(TASKS)})\b", run.printed)
    assert said == [dataset.task], run.printed
    assert contract["target"]["column"] == dataset.target and contract["target"].get("task") == dataset.task
    target_spec = contract["columns"][dataset.target]
    if dataset.task == "multiclass":
        classes = sorted(class_name(c) for c in target_spec["allowed"])
        assert classes == sorted({class_name(v) for v in run.first[dataset.target]}), target_spec
    columns = contract["columns"]
    for column in dataset.ignored:
        assert columns[column]["role"] == "ignore", (column, columns[column])
    for column in dataset.open_vocabulary:
        assert columns[column]["role"] == "categorical" and "allowed" not in columns[column], columns[column]
    for column in dataset.nullable:
        assert columns[column].get("nullable") is True, (column, columns[column])
    validation = repo.json("metrics/validation.json")
    assert validation["rows_in"] == len(run.first) and validation["rows_rejected"] == 0, validation

    # The gate compared the first model with the task's know-nothing baseline, and it did better.
    gate = repo.json("metrics/gate.json")
    assert gate["blessed"], gate["reasons"]
    assert {c["kind"] for c in gate["checks"] if c["passed"]} == {"baseline"}, gate["checks"]
    evaluation = repo.json("metrics/evaluation.json")
    assert evaluation.get("task") == dataset.task, evaluation
    primary = dataset.metrics[0]
    baseline = gate["baseline"]["metrics"][primary]
    assert evaluation[primary] < baseline  # every primary metric here is lower-is-better
    assert (repo.path / repo.json("deployments/champion.json")["champion"]["archive"]).is_file()

    # Only configuration, the new data and pipeline outputs changed; no code did.
    changed = repo.git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    paths = sorted(line[3:] for line in changed)
    assert all(p.startswith(CONFIGURATION_AND_OUTPUTS) and not p.endswith(".py") for p in paths), paths
    repo.assert_up_to_date()
    run.figures.update(rows=len(run.first), columns=len(run.first.columns), task=dataset.task,
                       dvc_repro_s=round(run.repro_seconds, 1), metric=primary,
                       offline=evaluation[primary], baseline=baseline)


@pytest.mark.parametrize("name", list(TASK_DATASETS))
def test_every_held_out_row_is_served_with_the_offline_metrics(adopted, name, tmp_path):
    run = adopted(name)
    repo, contract = run.repo, run.contract
    champion = repo.json("deployments/champion.json")["champion"]
    test = pd.read_parquet(repo.path / "data/features/test.parquet")
    records = input_records(contract, test)
    with_nulls = sum(any(v is None for v in r.values()) for r in records)
    assert with_nulls > 0  # every dataset here has empty cells, and some reach the held-out rows
    train = pd.read_parquet(repo.path / "data/features/train.parquet")
    unseen = {c: int((~test[c].dropna().isin(set(train[c].dropna()))).sum()) for c in run.dataset.open_vocabulary}
    assert all(unseen.values()), unseen  # held-out rows carry values training never saw

    process, url = start_bento_server(champion["bento_tag"], repo.path / ".bentoml", tmp_path / "serve.log",
                                      INFERENCE_LOG="off")
    try:
        started = time.monotonic()
        wait_ready(url, process)
        ready = time.monotonic()
        answers, codes = ask_every_row(url, records)
        asked = time.monotonic()
    finally:
        stop_server(process)
    answered = codes.count(200) / len(codes)
    run.figures.update(held_out=len(records), held_out_with_nulls=with_nulls, unseen_values=unseen,
                       answered_200=answered, serve_ready_s=round(ready - started, 1),
                       requests_s=round(asked - ready, 1))
    assert answered == 1.0, sorted(set(codes))
    assert {a["model_version"] for a in answers} == {champion["model_version"]}

    evaluation = repo.json("metrics/evaluation.json")
    served = served_metrics(run.dataset, contract, test, answers)
    run.figures.update(served=served[run.dataset.metrics[0]])
    assert_same_metrics(run.dataset, served, evaluation)


def canary_traffic(url: str, records: list[dict]) -> dict[str, int]:
    """Held-out rows, one request each (every one answered 200), until champion and challenger have
    each answered :data:`MIN_CANARY_REQUESTS`; how many each answered."""
    split: dict[str, int] = {}
    with requests.Session() as session:
        for record in records * 3:
            if len(split) == 2 and min(split.values()) >= MIN_CANARY_REQUESTS:
                break
            response = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
            assert response.status_code == 200, (record, response.text)
            version = response.json()[0]["model_version"]
            split[version] = split.get(version, 0) + 1
    return split


def canary_params(repo: Clone, metric: str) -> None:
    """``deploy.strategy: canary`` with half the traffic, and a change limit any challenger meets.

    The test is about the canary, not about whether a batch improved the model; the latency limit
    is loose because the machine is shared.
    """
    params = repo.params()
    params["deploy"].update(strategy="canary", canary_share=0.5, canary_max_latency_ratio=100.0)
    params["gate"]["change_thresholds"] = {metric: {"direction": LOWER_IS_BETTER, "absolute": 1.0e9}}
    repo.write_params(params)


def class_values_params(repo: Clone, contract: dict) -> dict:
    """``evaluate.class_values`` where a right answer of the last class is worth five, any other one:
    the service must then answer by expected value, as evaluate valued it."""
    classes = [str(c) for c in contract["columns"][contract["target"]["column"]]["allowed"]]
    table = {a: {p: (5.0 if a == p == classes[-1] else 1.0 if a == p else 0.0) for p in classes} for a in classes}
    params = repo.params()
    params["evaluate"]["class_values"] = table
    repo.write_params(params)
    return table


@pytest.mark.parametrize("retrained", RETRAINED)
def test_a_later_batch_goes_through_retrain_and_a_canary_promotes_it(adopted, retrained, tmp_path):
    run = adopted(retrained)
    repo, dataset = run.repo, run.dataset
    assert run.later is not None
    canary_params(repo, dataset.metrics[0])
    class_values = class_values_params(repo, run.contract) if dataset.task == "multiclass" else None
    batch = f"{dataset.name}-later.csv"
    run.later.to_csv(repo.path / "data/incoming" / batch, index=False)

    started = time.monotonic()
    proc = repo.python("-m", "mlops_template", "retrain", check=False, timeout=900)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [a["batch"] for a in summary["accepted"]] == [batch], summary
    assert summary["candidate_version"] == "2" and summary["blessed"], summary
    record = repo.json("deployments/champion.json")
    assert record["champion"]["model_version"] == "1" and record["challenger"]["model_version"] == "2", record
    assert repo.json("deployments/routing.json")["challenger"]["model_version"] == "2"
    assert (repo.path / "data/raw" / batch).is_file()

    contract = run.contract
    test = pd.read_parquet(repo.path / "data/features/test.parquet")
    records = input_records(contract, test)
    process, url = start_bento_server(record["champion"]["bento_tag"], repo.path / ".bentoml",
                                      tmp_path / "serve.log", INFERENCE_LOG="off",
                                      ROUTING_FILE=str(repo.path / "deployments/routing.json"))
    try:
        wait_ready(url, process)
        split = canary_traffic(url, records)
        assert set(split) == {"1", "2"} and min(split.values()) >= MIN_CANARY_REQUESTS, split
        decided = repo.python("-m", "mlops_template", "canary", "decide", "--metrics-url", f"{url}/metrics",
                              "--min-requests", str(MIN_CANARY_REQUESTS))
        decision = json.loads(decided.stdout.strip().splitlines()[-1])
        assert decision["action"] == "promote", decided.stdout
        wait_until(lambda: {a["model_version"] for a in ask_every_row(url, records[:10])[0]} == {"2"}, 30, 0.5,
                   "the service switched to v2")  # the running service follows the routing file
        answers, codes = ask_every_row(url, records)
    finally:
        stop_server(process)
    assert codes.count(200) == len(codes), sorted(set(codes))
    assert repo.json("deployments/champion.json")["champion"]["model_version"] == "2"
    assert [e["action"] for e in repo.history()][-2:] == ["canary_start", "canary_promote"]

    # The promoted model, served, scores the grown test split as evaluate scored it offline.
    evaluation = repo.json("metrics/evaluation.json")
    served = served_metrics(dataset, contract, test, answers, class_values)
    assert_same_metrics(dataset, served, evaluation)
    if class_values is not None:  # the labels served are the ones evaluate valued
        assert evaluation["decision_values"] is not None
        assert served["value_per_row"] == pytest.approx(evaluation["value_per_row"], rel=1e-4, abs=1e-5)
    run.figures.update(retrain_s=round(seconds, 1), retrain_rows=len(run.later), canary_split=split,
                       v2_offline=evaluation[dataset.metrics[0]], v2_served=served[dataset.metrics[0]])
