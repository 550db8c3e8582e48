"""Small public datasets of every task, with contracts and real fitted models, for the evaluate-stage tests.

sklearn's bundled copies (no network): diabetes (regression, 442 rows), wine (multiclass, 178 rows,
three cultivars) and breast cancer (binary, 569 rows). Each gets a categorical column to slice by and
a ``noise`` column the model does not read (``featurize.drop``), as a team's data would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template.core.contract import Contract, contract_from_dict
from mlops_template.core.features import FeatureSpec, build_features, feature_spec_from
from mlops_template.core.tasks import Task, task_of

TASK_NAMES = ("binary", "multiclass", "regression")
WINES = ("barolo", "grignolino", "barbera")
REGIONS = ("north", "south", "east")


@dataclass
class Dataset:
    """A frame of contract-shaped rows and its contract."""

    name: str
    frame: pd.DataFrame
    contract: Contract

    @property
    def task(self) -> Task:
        return task_of(self.contract)


def _with_extras(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    frame["region"] = rng.choice(REGIONS, size=len(frame), p=[0.3, 0.35, 0.35])
    frame["noise"] = rng.normal(size=len(frame))
    return frame


def _contract(name: str, frame: pd.DataFrame, target: dict[str, Any], target_spec: dict[str, Any]) -> Contract:
    columns = {c: {"type": "float", "role": "numeric"} for c in frame.columns
               if c not in ("region", target["column"])}
    columns["region"] = {"type": "str", "role": "categorical", "allowed": list(REGIONS)}
    columns[target["column"]] = {**target_spec, "role": "target"}
    return contract_from_dict({"name": name, "target": target, "columns": columns})


def dataset(task: str, seed: int = 0) -> Dataset:
    """The bundled dataset of ``task`` with ``region`` (categorical) and ``noise`` (unused) columns."""
    from sklearn import datasets

    if task == "regression":
        frame = datasets.load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
        frame = _with_extras(frame, seed)
        return Dataset("diabetes", frame, _contract("diabetes", frame, {"column": "progression", "task": "regression"},
                                                    {"type": "float"}))
    if task == "multiclass":
        frame = datasets.load_wine(as_frame=True).frame.rename(columns={"od280/od315_of_diluted_wines": "od280"})
        frame["cultivar"] = np.array(WINES)[frame.pop("target").to_numpy()]
        frame = _with_extras(frame, seed)
        return Dataset("wine", frame, _contract("wine", frame, {"column": "cultivar", "task": "multiclass"},
                                                {"type": "str", "allowed": list(WINES)}))
    frame = datasets.load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    frame = _with_extras(frame, seed)
    return Dataset("cancer", frame, _contract("cancer", frame, {"column": "diagnosis", "positive": "malignant"},
                                              {"type": "str", "allowed": ["malignant", "benign"]}))


@dataclass
class Fitted:
    """A model fitted on the training split, what it reads, and its card."""

    data: Dataset
    train: pd.DataFrame
    test: pd.DataFrame
    model: Pipeline
    spec: FeatureSpec
    card: dict

    @property
    def predict(self) -> Callable[[pd.DataFrame], np.ndarray]:
        """Raw rows -> the task's output, as the evaluate stage's loaded predictor."""
        return lambda frame: self.data.task.predict(self.model, build_features(frame, self.spec))


def fit(data: Dataset, shuffle_labels: bool = False, estimator: str = "linear", drop: tuple[str, ...] = ("noise",),
        derived: dict[str, str] | None = None, seed: int = 0, train_share: float = 1.0) -> Fitted:
    """Fit ``estimator`` for the dataset's task on 70% of the rows (labels shuffled: a model that learnt nothing).

    ``train_share`` < 1 fits on that first share of the training rows only: the model before a batch was added.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.frame))
    cut = int(0.7 * len(order))
    train, test = data.frame.iloc[order[:cut]].reset_index(drop=True), data.frame.iloc[order[cut:]].reset_index(
        drop=True)
    train = train.iloc[: int(train_share * len(train))]
    task, spec = data.task, feature_spec_from(data.contract, list(drop), derived or {})
    labels = task.encode(train[data.contract.target])
    fitted_on = rng.permutation(labels) if shuffle_labels else labels
    preprocess = ColumnTransformer(
        [("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
          spec.numeric_columns),
         ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(spec.categorical))])
    model = Pipeline([("preprocess", preprocess), ("estimator", task.estimator(estimator, {}, seed))])
    model.fit(build_features(train, spec), fitted_on)
    card = {"task": task.name, "classes": list(task.classes), "mlflow": {"model_version": "1", "run_id": "run-1"},
            "training_data": {"rows": len(train), "target": task.target_summary(labels)}}
    return Fitted(data, train, test, model, spec, card)
