"""Unit tests for mlops_template.params_check: params that do not fit the contract stop at once."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mlops_template.core.contract import load_contract
from mlops_template.pipeline.params_check import ParamsError, checked_contract, problems_with

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def params(monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)  # data.raw and data.contract are repository-relative
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def contract():
    return load_contract(ROOT / "contracts" / "adult.yaml")


def test_the_shipped_params_fit_the_shipped_contract(params, contract):
    assert problems_with(params, contract) == []
    assert checked_contract(params).name == contract.name


def with_change(params: dict, section: str, key: str, value) -> dict:
    changed = copy.deepcopy(params)
    changed[section][key] = value
    return changed


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("featurize", "drop", ["fnlwgt", "bill_length"], "featurize.drop names ['bill_length']"),
    ("featurize", "drop", ["income"], "['income'], which is the target"),
    ("featurize", "drop", "fnlwgt", "featurize.drop must be a list"),
    ("featurize", "derived", {"ratio": "capital_gain / hours"}, "featurize.derived.ratio names ['hours']"),
    ("featurize", "derived", {"age": "age * 2"}, "reuses the contract column name 'age'"),
    ("featurize", "derived", {"bad": "age +"}, "featurize.derived.bad: 'age +' is not a valid expression"),
    ("featurize", "derived", {"leak": "log(capital_gain + 1) * (income == '>50K')"}, "which is the target"),
    ("evaluate", "slices", ["sex", "gender"], "evaluate.slices names ['gender']"),
    ("evaluate", "value_matrix", {"tp": 1, "fp": 0}, "evaluate.value_matrix must give a number"),
    ("gate", "value_thresholds", {"roc_auc": {"min": 0.8}}, "gate: gate.value_thresholds.roc_auc"),
    ("deploy", "model_name", "Adult Income", "deploy.model_name 'Adult Income'"),
    ("deploy", "service_name", "adult-service", "deploy.service_name 'adult-service'"),
    ("data", "raw", "data/raw/adult.csv.gz", "data.raw must be a folder of CSV batches"),
])
def test_a_mismatch_names_the_key_and_the_fix(params, contract, section, key, value, expected):
    problems = problems_with(with_change(params, section, key, value), contract)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_function_names_in_expressions_are_not_columns(params, contract):
    changed = with_change(params, "featurize", "derived", {"log_gain": "log(capital_gain + 1) - abs(age)"})
    assert problems_with(changed, contract) == []


def test_every_problem_is_reported_together_and_a_bad_contract_path_is_one(params):
    changed = with_change(with_change(params, "featurize", "drop", ["nope"]), "evaluate", "slices", ["nah"])
    with pytest.raises(ParamsError) as caught:
        checked_contract(changed)
    assert len(caught.value.problems) == 2
    missing = with_change(params, "data", "contract", "contracts/missing.yaml")
    with pytest.raises(ParamsError, match="data.contract 'contracts/missing.yaml' cannot be used"):
        checked_contract(missing)
