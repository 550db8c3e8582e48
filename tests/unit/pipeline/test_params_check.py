"""Unit tests for mlops_template.params_check: params that do not fit the contract stop at once."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mlops_template.core.contract import load_contract
from mlops_template.core.params import SECTIONS, Params, load
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


# --- params.yaml read into typed, frozen sections (mlops_template.core.params) ----------------------------

@pytest.mark.parametrize(("section", "key"), [("featurize", "tset_size"), ("deploy", "canary_shar"),
                                              ("monitoring", "windw_records"), ("ingest", "max_pis")])
def test_a_typo_in_a_key_is_refused_naming_it_and_the_known_keys(params, section, key):
    changed = with_change(params, section, key, 1)
    with pytest.raises(ParamsError) as caught:
        Params.from_mapping(changed)
    assert caught.value.problems == [
        f"unknown {section} keys [{key!r}]; known: {list(SECTIONS[section].model_fields)}"]


def test_every_malformed_key_is_named_at_once_and_a_missing_section_too(params):
    changed = with_change(with_change(params, "featurize", "test_size", "a fifth"), "deploy", "canary_share", 2)
    del changed["mlflow"]
    with pytest.raises(ParamsError) as caught:
        Params.from_mapping(changed)
    assert len(caught.value.problems) == 3, caught.value.problems
    assert any(p.startswith("featurize.test_size: ") and "'a fifth'" in p for p in caught.value.problems)
    assert "deploy.canary_share must be a share between 0 and 1, got 2.0" in caught.value.problems
    assert "params.yaml has no mlflow section" in caught.value.problems


def test_what_dvc_exp_run_set_writes_is_read_alike(tmp_path):
    """``dvc exp run -S`` rewrites params.yaml: block lists, quoted numbers; the sections read the same."""
    shipped = load(ROOT / "params.yaml")
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    text = text.replace("drop: [fnlwgt, education]", "drop:\n  - fnlwgt\n  - education")
    text = text.replace("slices: [sex, race]", "slices:\n  - sex\n  - race")
    text = text.replace("  seed: 42\n  reference_rows", "  seed: '42'\n  reference_rows", 1)
    text = text.replace("estimator: hist_gradient_boosting", "estimator: random_forest")
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    rewritten = load(tmp_path / "params.yaml")
    assert rewritten.featurize == shipped.featurize and rewritten.evaluate == shipped.evaluate
    assert rewritten.train.estimator == "random_forest"
    assert rewritten.train.chosen_hyperparameters == shipped.train.hyperparameters["random_forest"]


def test_sections_are_frozen_and_each_default_lives_in_one_place(params):
    loaded = Params.from_mapping(params)
    with pytest.raises(ValidationError):
        loaded.deploy.canary_share = 0.5
    bare = copy.deepcopy(params)
    for key in ("strategy", "canary_share", "canary_min_requests"):
        del bare["deploy"][key]
    del bare["monitoring"]
    defaults = Params.from_mapping(bare)
    assert (defaults.deploy.strategy, defaults.deploy.canary_share, defaults.deploy.canary_min_requests) == \
        ("direct", 0.1, 100)
    assert defaults.monitoring.min_window_records == 500
