"""A model trained in-process with the default params, shared by the behavioural tests."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.config import load_params
from mlops_template.core.contract import load_contract
from mlops_template.core.features import build_features, feature_spec_from
from mlops_template.pipeline.splits import split_train_test
from mlops_template.pipeline.training import build_pipeline
from mlops_template.pipeline.validation import validate_file

# The bundled file by name, never the data.raw folder: it also holds the batches a user's
# retrain accepted, and the unit tier must not depend on what a workspace holds.
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "raw" / "adult.csv.gz"


@pytest.fixture(scope="session")
def params():
    return load_params()


@pytest.fixture(scope="session")
def contract(params):
    return load_contract(params["data"]["contract"])


@pytest.fixture(scope="session")
def split(params, contract):
    valid = validate_file(BUNDLED, contract).valid
    cfg = params["featurize"]
    train, test, _ = split_train_test(valid, contract.target, cfg["test_size"], cfg["seed"], 100)
    return train, test


@pytest.fixture(scope="session")
def spec(params, contract):
    cfg = params["featurize"]
    return feature_spec_from(contract, cfg["drop"], cfg["derived"])


@pytest.fixture(scope="session")
def trained(params, contract, spec, split):
    """(pipeline, test frame, test labels) for the default estimator."""
    cfg = params["train"]
    train, test = split
    pipeline = build_pipeline(spec, cfg["estimator"], cfg["hyperparameters"][cfg["estimator"]], cfg["seed"])
    pipeline.fit(build_features(train, spec), (train[contract.target] == contract.positive_class).astype(int))
    labels = (test[contract.target] == contract.positive_class).astype(int).to_numpy()
    return pipeline, test, labels


def predict(pipeline, frame: pd.DataFrame, spec) -> np.ndarray:
    """Probability of the positive class for contract-shaped rows."""
    return pipeline.predict_proba(build_features(frame, spec))[:, 1]
