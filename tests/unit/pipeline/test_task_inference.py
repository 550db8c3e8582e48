"""Onboarding infers the task from the target column, says what it chose, and suits params.yaml to it.

Bundled public data of each task, written as CSV the way a team's export would be: scikit-learn's
diabetes (a numeric target of 214 whole numbers: regression), wine (3 integer-coded cultivars) and
digits (10 integer-coded classes), statsmodels' fair (``affairs``: a skewed, zero-heavy decimal
target; ``rate_marriage``: 5 integer codes written as ``5.0``), plus text classes and a skewed
binary target built here. Each draft must be a contract the validate stage accepts every row of.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_template import cli
from mlops_template.core.contract import ContractError, contract_from_dict, load_contract
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.params import load as load_params
from mlops_template.core.tasks import task_of
from mlops_template.pipeline.comparison import SLICE_METRICS
from mlops_template.pipeline.inference import infer_contract, read_csv_for_inference
from mlops_template.pipeline.onboarding import init_project
from mlops_template.pipeline.params_check import checked_contract
from mlops_template.pipeline.validation import describe_rejections, validate_file

REPO = Path(__file__).resolve().parents[3]


def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame


def wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame


def digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    return load_digits(as_frame=True).frame


def fair() -> pd.DataFrame:
    import statsmodels.api as sm

    return sm.datasets.fair.load_pandas().data


def text_classes(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"size": rng.normal(size=rows).round(3), "colour": rng.choice(["red", "blue"], rows),
                         "species": rng.choice(["adelie", "chinstrap", "gentoo", "macaroni"], rows)})


def skewed_binary(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=rows).round(4), "churned": rng.choice(["yes", "no"], rows, p=[0.2, 0.8])})


def drafted(frame: pd.DataFrame, tmp_path: Path, target: str, **options):
    """The draft from ``frame`` written as CSV and read back as the CLI does, and its validation."""
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    draft = infer_contract(read_csv_for_inference(path), target=target, **options)
    contract = contract_from_dict(draft.contract)
    result = validate_file(path, contract)
    assert result.rejected.empty, describe_rejections(result)
    assert len(result.valid) == len(frame)
    return draft, contract, result.valid


@pytest.mark.parametrize("frame, target, expected_type", [
    (diabetes, "target", "int"),    # 214 whole numbers: more than --max-categories
    (fair, "affairs", "float"),     # skewed: 4,313 zeros, a long tail of decimals
])
def test_a_numeric_target_with_many_values_is_a_regression(tmp_path, frame, target, expected_type):
    draft, contract, valid = drafted(frame(), tmp_path, target)
    assert draft.task == contract.task == "regression"
    assert draft.contract["target"] == {"column": target, "task": "regression"}
    spec = draft.contract["columns"][target]
    assert spec["role"] == "target" and spec["type"] == expected_type and "allowed" not in spec
    assert draft.choice.startswith("task regression") and "observed" in draft.choice
    labels = task_of(contract).encode(valid[target])
    assert labels.dtype == np.float64 and labels.mean() == pytest.approx(frame()[target].mean())


def test_integer_codes_are_multiclass_classes_in_numeric_order(tmp_path):
    draft, contract, valid = drafted(digits(), tmp_path, "target")
    assert contract.task == "multiclass" and contract.classes == tuple(str(d) for d in range(10))
    assert draft.contract["target"] == {"column": "target", "task": "multiclass"}
    assert "10 integer codes" in draft.choice
    # A quantity written as whole numbers would be a regression: the review says how to ask for one.
    assert any("--task regression" in w for w in draft.warnings)
    assert np.array_equal(task_of(contract).encode(valid["target"]), digits()["target"].to_numpy())


def test_codes_written_as_decimals_and_text_classes_are_multiclass(tmp_path):
    _, rated, _ = drafted(fair(), tmp_path, "rate_marriage")
    assert rated.task == "multiclass" and rated.classes == ("1.0", "2.0", "3.0", "4.0", "5.0")
    _, cultivars, _ = drafted(wine(), tmp_path, "target")
    assert cultivars.classes == ("0", "1", "2")
    draft, species, _ = drafted(text_classes(), tmp_path, "species")
    assert species.classes == ("adelie", "chinstrap", "gentoo", "macaroni")
    assert draft.choice.startswith("task multiclass (4 text values")


def test_without_positive_a_binary_target_takes_the_minority_class_and_says_so(tmp_path):
    draft, contract, _ = drafted(skewed_binary(), tmp_path, "churned")
    assert contract.task == "binary" and contract.positive_class == "yes"
    assert draft.contract["target"] == {"column": "churned", "positive": "yes"}  # as binary contracts always were
    assert "minority class" in draft.choice and "--positive" in draft.choice
    # Given, --positive wins over the minority, exactly as before.
    given, _, _ = drafted(skewed_binary(), tmp_path, "churned", positive="no")
    assert given.contract["target"] == {"column": "churned", "positive": "no"}


def test_task_overrides_what_the_values_suggest(tmp_path):
    draft, contract, _ = drafted(fair(), tmp_path, "rate_marriage", task="regression")
    assert contract.task == "regression" and draft.contract["columns"]["rate_marriage"]["type"] == "int"
    assert draft.choice.startswith("task regression (--task)")
    _, yes_no, _ = drafted(skewed_binary(), tmp_path, "churned", task="binary")
    assert yes_no.positive_class == "yes"
    # Two numbers asked for as a regression: numbers, so it can be one.
    zero_one = skewed_binary().assign(churned=lambda f: (f["churned"] == "yes").astype(int))
    assert drafted(zero_one, tmp_path, "churned", task="regression")[1].task == "regression"


@pytest.mark.parametrize("frame, target, options, message", [
    (text_classes, "species", {"task": "regression"}, "not numbers .*'adelie'"),
    (text_classes, "species", {"task": "binary"}, "4 distinct values .* exactly two"),
    (skewed_binary, "churned", {"task": "multiclass"}, "2 distinct values .* 3 or more"),
    (diabetes, "target", {"task": "multiclass"}, "214 distinct values, more than --max-categories 50"),
    (text_classes, "species", {"positive": "adelie"}, "4 distinct values"),
    (skewed_binary, "churned", {"task": "regression", "positive": "yes"}, "binary target, not of a regression"),
])
def test_a_target_that_cannot_be_the_task_is_refused_saying_why(tmp_path, frame, target, options, message):
    path = tmp_path / "export.csv"
    frame().to_csv(path, index=False)
    with pytest.raises(ContractError, match=message):
        infer_contract(read_csv_for_inference(path), target=target, **options)


def test_text_with_too_many_values_or_a_single_value_is_refused(tmp_path):
    many = pd.DataFrame({"x": range(300), "code": [f"c{i % 60}" for i in range(300)]})
    with pytest.raises(ContractError, match="60 distinct text values .* --max-categories"):
        infer_contract(many.astype(str), target="code")
    assert infer_contract(many.astype(str), target="code", max_categories=60).task == "multiclass"
    with pytest.raises(ContractError, match="single value 'same'"):
        infer_contract(many.assign(code="same").astype(str), target="code")


def test_the_command_line_refuses_in_one_line_with_exit_65(tmp_path, capsys):
    csv = tmp_path / "species.csv"
    text_classes().to_csv(csv, index=False)
    assert cli.main(["contract", "infer", str(csv), "--target", "species", "--task", "regression"]) == \
        ExitCode.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlops-template contract: error: --task regression:"), err
    assert cli.main(["contract", "infer", str(csv), "--target", "species"]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert printed.startswith("# task multiclass") and yaml.safe_load(printed)["target"]["task"] == "multiclass"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A scratch project root: the shipped params.yaml and nothing else (onboarding writes the rest)."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("frame, target, task, primary", [
    (diabetes, "target", "regression", "rmse"),
    (wine, "target", "multiclass", "log_loss"),
])
def test_onboarding_suits_params_to_the_task(project, capsys, frame, target, task, primary):
    frame().to_csv(project / "mine.csv", index=False)
    assert init_project(project / "mine.csv", target) == 0
    printed = capsys.readouterr().out
    assert f"task {task}" in printed.splitlines()[0]  # what was chosen comes first
    params = load_params(project / "params.yaml")
    contract = checked_contract(params)  # every key fits the drafted contract
    assert contract.task == task
    gate = params.gate
    assert list(gate.baseline_thresholds) == [primary] == list(gate.change_thresholds)
    assert gate.baseline_thresholds[primary].direction == "lower_is_better"
    assert gate.baseline_thresholds[primary].relative == -0.05
    assert gate.slices.metric in SLICE_METRICS[task]
    raw = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    assert "value_matrix" not in raw["evaluate"]  # binary's decision values mean nothing here
    assert ("costs" in raw["evaluate"]) == (task == "regression")
    for key in ("gate.baseline_thresholds", "gate.change_thresholds", "gate.slices.metric"):
        assert key in printed


def test_onboarding_a_binary_target_keeps_todays_params(project, capsys):
    skewed_binary().to_csv(project / "mine.csv", index=False)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert init_project(project / "mine.csv", "churned") == 0
    assert "positive class 'yes' (the minority class" in capsys.readouterr().out
    raw = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    assert raw["gate"]["baseline_thresholds"] == shipped["gate"]["baseline_thresholds"]
    assert raw["gate"]["change_thresholds"] == shipped["gate"]["change_thresholds"]
    assert raw["gate"]["slices"]["metric"] == shipped["gate"]["slices"]["metric"] == "soft_recall"
    assert raw["evaluate"]["value_matrix"] == {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0}
    assert load_contract(project / "contracts/mine.yaml").positive_class == "yes"


def test_onboarding_again_as_another_task_replaces_the_first_tasks_keys(project, capsys):
    diabetes().to_csv(project / "sugar.csv", index=False)
    assert init_project(project / "sugar.csv", "target") == 0
    skewed_binary().to_csv(project / "churn.csv", index=False)
    assert init_project(project / "churn.csv", "churned", positive="yes") == 0
    params = load_params(project / "params.yaml")
    assert checked_contract(params).task == "binary"
    assert set(params.gate.baseline_thresholds) == {"log_loss", "roc_auc"}
    raw = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    assert "costs" not in raw["evaluate"] and "value_matrix" in raw["evaluate"]


def test_onboarding_refuses_a_task_the_data_cannot_be(project, capsys):
    text_classes().to_csv(project / "mine.csv", index=False)
    before = (project / "params.yaml").read_text(encoding="utf-8")
    with pytest.raises(UserError, match="--task regression: target column 'species' holds values that are not"):
        init_project(project / "mine.csv", "species", task="regression")
    # The first attempt left the CSV in data/raw/ (as it always has); the command line, from there:
    assert cli.main(["onboard", "data/raw/mine.csv", "--target", "species", "--task", "binary"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlops-template onboard: error: --task binary: target column 'species' holds 4 distinct values "
                   "['adelie', 'chinstrap', 'gentoo', 'macaroni']; a binary target has exactly two"], err
    assert (project / "params.yaml").read_text(encoding="utf-8") == before
    assert not (project / "contracts").exists()
