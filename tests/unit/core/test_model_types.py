"""The allow-list of model types is exactly what this project's pipelines hold, re-derived here.

:data:`mlops_template.core.artifacts.ALLOWED_MODEL_TYPES` is written out in code, so it cannot
follow a change of the training code by itself. This test fits every ``train.estimator`` the
project offers for every task (binary, multiclass, regression; with params.yaml's hyperparameters
and with the defaults) and the test model of ``scripts/make_test_bento.py``, on data of several
shapes (nullable ints and floats, an all-null column, open vocabularies with infrequent categories,
numeric-only, categorical-only, string or 0/1 labels), saves each with skops and reads the types
its schema asks for. The union must equal
the allow-list: a type the training code now needs fails here (add it), and one no pipeline
holds any more fails too (remove it). Run this file as a script to print the derived list.
"""

from __future__ import annotations

import pprint
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from mlops_template.core import artifacts  # noqa: E402
from mlops_template.core.config import load_params  # noqa: E402
from mlops_template.core.contract import contract_from_dict, load_contract  # noqa: E402
from mlops_template.core.features import build_features, feature_spec_from  # noqa: E402
from mlops_template.core.params import TrainSection  # noqa: E402
from mlops_template.core.tasks import MulticlassTask, RegressionTask, Task, task_of  # noqa: E402
from mlops_template.pipeline.training import build_pipeline  # noqa: E402
from mlops_template.pipeline.validation import validate_file, validate_frame  # noqa: E402

ROWS = 400


def synthetic_contract(numeric: bool, categorical: bool) -> dict:
    """A contract with the requested roles: nullable and non-null ints and floats, open and closed texts."""
    columns: dict = {"label": {"type": "str", "role": "target", "allowed": ["yes", "no"]}}
    if numeric:
        columns |= {"count": {"type": "int", "role": "numeric", "min": 0},
                    "maybe_count": {"type": "int", "role": "numeric", "nullable": True},
                    "ratio": {"type": "float", "role": "numeric", "nullable": True},
                    "empty": {"type": "float", "role": "numeric", "nullable": True}}
    if categorical:
        columns |= {"city": {"type": "str", "role": "categorical", "nullable": True},
                    "flag": {"type": "str", "role": "categorical", "allowed": ["a", "b"]}}
    return {"name": "shape", "columns": columns, "target": {"column": "label", "positive": "yes"}}


def synthetic_rows(contract_raw: dict, seed: int) -> pd.DataFrame:
    """Raw string rows for :func:`synthetic_contract`: nulls, an all-null column, rare categories."""
    rng = np.random.default_rng(seed)
    names = contract_raw["columns"]
    raw: dict[str, list] = {"label": list(rng.choice(["yes", "no"], ROWS, p=[0.3, 0.7]))}
    if "count" in names:
        raw["count"] = [str(v) for v in rng.integers(0, 50, ROWS)]
        raw["maybe_count"] = [None if rng.random() < 0.2 else str(v) for v in rng.integers(-5, 5, ROWS)]
        raw["ratio"] = [None if rng.random() < 0.1 else f"{v:.4f}" for v in rng.normal(size=ROWS)]
        raw["empty"] = [None] * ROWS
    if "city" in names:
        common = ["north", "south", "east"]
        rare = [f"village-{i}" for i in range(40)]
        raw["city"] = [None if rng.random() < 0.1 else str(rng.choice(common if rng.random() < 0.7 else rare))
                       for _ in range(ROWS)]
        raw["flag"] = list(rng.choice(["a", "b"], ROWS))
    return pd.DataFrame(raw)


def shapes() -> list[tuple[str, object, object, pd.DataFrame]]:
    """(name, contract, feature spec, validated rows) for each data shape."""
    found = []
    for name, numeric, categorical, derived in (
            ("mixed", True, True, {"net": "count - maybe_count", "big": "where(ratio > 0, log1p(count), 0)"}),
            ("numeric-only", True, False, {"scaled": "count / 10"}),
            ("categorical-only", False, True, {})):
        raw = synthetic_contract(numeric, categorical)
        contract = contract_from_dict(raw)
        valid = validate_frame(synthetic_rows(raw, len(found)), contract).valid
        found.append((name, contract, feature_spec_from(contract, [], derived), valid))
    params = load_params()
    adult = load_contract(REPO / params["data"]["contract"])
    # The bundled file by name: data/raw/ also holds the batches a user's retrain accepted.
    valid = validate_file(REPO / "data" / "raw" / "adult.csv.gz", adult).valid.iloc[:3000]
    cfg = params["featurize"]
    found.append(("adult", adult, feature_spec_from(adult, cfg["drop"], cfg["derived"]), valid))
    return found


def derived_types(tmp: Path) -> dict[str, set[str]]:
    """Type name -> skops loaders, over every estimator, hyperparameter set, shape and label kind."""
    params = load_params()
    found: dict[str, set[str]] = {}

    def record(pipeline, label: str) -> None:
        path = tmp / f"{label}.skops"
        artifacts.save_model(pipeline, path)
        for type_name, loaders in artifacts.schema_types(path.read_bytes(), path).items():
            found.setdefault(type_name, set()).update(loaders)

    for shape, contract, spec, valid in shapes():
        features = build_features(valid, spec)
        rng = np.random.default_rng(len(valid))
        tasks: list[tuple[Task, np.ndarray]] = [
            (task_of(contract), task_of(contract).encode(valid[contract.target]))]  # what training fits
        if shape == "mixed":  # an estimator's own types do not depend on the columns: one shape is enough
            classes = MulticlassTask("kind", ("a", "b", "c"))
            amount = RegressionTask("amount")
            tasks += [(classes, classes.encode(pd.Series(rng.choice(["a", "b", "c"], len(valid))))),
                      (amount, amount.encode(pd.Series(rng.gamma(2.0, 10.0, len(valid)))))]
        for task, labels in tasks:
            for estimator in task.estimators:
                configured = TrainSection.parse({**params["train"], "estimator": estimator}).chosen_hyperparameters
                # defaults and params.yaml's settings; string labels as the tests' logistic models use them
                runs = [("int", labels, {}), ("int", labels, configured)]
                if estimator == "logistic_regression" and task.name == "binary":
                    runs.append(("str", valid[contract.target], configured))
                for kind, fitted_on, hyper in runs:
                    pipeline = build_pipeline(spec, estimator, hyper, params["train"]["seed"], task)
                    record(pipeline.fit(features, fitted_on), f"{shape}-{task.name}-{estimator}-{kind}-{len(hyper)}")
    sys.path.insert(0, str(REPO / "scripts"))
    import make_test_bento

    make_test_bento.train(tmp / "test-bento", 3000)  # saves its own model.skops
    for type_name, loaders in artifacts.schema_types((tmp / "test-bento" / "model.skops").read_bytes(),
                                                     tmp).items():
        found.setdefault(type_name, set()).update(loaders)
    return found


def loads_back(folder: Path) -> set[str]:
    """Names of the saved models in ``folder`` that load_model refuses (checked against their types)."""
    refused = set()
    for path in sorted(folder.rglob("*.skops")):
        try:
            artifacts.load_model(path, expected_types=artifacts.model_types(path))
        except artifacts.ModelIntegrityError:
            refused.add(path.name)
    return refused


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> dict[str, set[str]]:
    """The derived list, plus ``<failed to load>``: models load_model refused (should be none)."""
    from threadpoolctl import threadpool_limits

    folder = tmp_path_factory.mktemp("model-types")
    with threadpool_limits(1):
        found = derived_types(folder)
    found["<failed to load>"] = loads_back(folder)
    return found


def test_the_allow_list_is_what_the_project_trains(derived) -> None:
    """Every (type, loader) a trained pipeline holds is allowed, and nothing else is."""
    derived = dict(derived)
    refused = derived.pop("<failed to load>")
    allowed = {name: set(loaders) for name, loaders in artifacts.ALLOWED_MODEL_TYPES.items()}
    assert derived == allowed, "ALLOWED_MODEL_TYPES is stale; the derived list is:\n" + pprint.pformat(
        {name: tuple(sorted(loaders)) for name, loaders in sorted(derived.items())})
    assert refused == set(), f"load_model refused trained models: {sorted(refused)}"


def test_no_allowed_type_can_run_code() -> None:
    """The allow-list holds no function, operator, module-level callable or OS access."""
    for name in artifacts.ALLOWED_MODEL_TYPES:
        module = name.rsplit(".", 1)[0]
        if name == "mlops_template.core.boosting.LightGBMModel":  # state: plain data; parses LightGBM text
            continue
        assert module.split(".")[0] in ("builtins", "numpy", "sklearn"), name
        assert name not in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__",
                            "builtins.open", "builtins.compile"), name
    loaders = set().union(*artifacts.ALLOWED_MODEL_TYPES.values())
    assert not loaders & {"FunctionNode", "OperatorFuncNode", "PartialNode", "MethodNode",
                          "ConstructorFromReduceNode"}, loaders


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        pprint.pprint({name: tuple(sorted(loaders)) for name, loaders in sorted(derived_types(Path(scratch)).items())})
