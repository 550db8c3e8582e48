"""Models of every task on sklearn's bundled public datasets, for the serving tests.

Each dataset becomes a contract (numeric columns with their observed ranges, one categorical
column ``band`` derived from the widest feature, nulls in a few cells), a frame split into train
and held-out rows, and a pipeline built by :func:`mlops_template.pipeline.training.build_pipeline`
for the contract's task:

- ``wine``: multiclass, 3 text classes, 178 rows x 13 columns;
- ``digits``: multiclass, 10 integer-coded classes ("0".."9"), 1,797 rows x 64 columns;
- ``diabetes``: regression, 442 rows x 10 columns, with a derived feature;
- ``adult`` (:func:`adult_data`): binary, the repository's own data and contract.

:meth:`TaskData.package` writes a fitted pipeline as a model directory and :func:`package_in_child`
turns such directories into BentoML models and bentos the way the deploy stage does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn import datasets

from mlops_template.core.artifacts import save_model
from mlops_template.core.contract import Contract, contract_from_dict, load_contract
from mlops_template.core.features import FeatureSpec, build_features, feature_spec_from
from mlops_template.core.package_files import CHECKSUM_FILE, FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.tasks import Task, task_of
from mlops_template.pipeline.training import build_pipeline
from tests.support.servers import CONTRACT, RAW, REPO, clean_env

BANDS = ("low", "mid", "high")
LOADERS = {"wine": (datasets.load_wine, "multiclass", "cultivar"),
           "digits": (datasets.load_digits, "multiclass", "digit"),
           "diabetes": (datasets.load_diabetes, "regression", "progression")}
DERIVED = {"diabetes": {"bmi_bp": "bmi * bp"}}
NULL_SHARE = 0.05


@dataclass
class TaskData:
    """A dataset of one task: contract, feature spec, train and held-out frames."""

    name: str
    contract: Contract
    raw_contract: dict[str, Any]
    spec: FeatureSpec
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def task(self) -> Task:
        """The contract's task."""
        return task_of(self.contract)

    def contract_yaml(self) -> str:
        """The contract as the YAML file a package ships."""
        return yaml.safe_dump(self.raw_contract, sort_keys=False)

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Records as a client sends them: JSON types (floats exact: ``json`` writes their repr), nulls left out."""
        inputs = frame[[c.name for c in self.contract.input_columns]].astype(object)
        rows = inputs.where(inputs.notna(), None).to_dict(orient="records")
        return [{str(k): v for k, v in row.items() if v is not None} for row in rows]

    def fit(self, estimator: str = "hist_gradient_boosting", hyperparameters: dict[str, Any] | None = None) -> Any:
        """A pipeline for the task fitted on the train rows (the task's labels)."""
        params = hyperparameters if hyperparameters is not None else {"max_iter": 30}
        pipeline = build_pipeline(self.spec, estimator, params, 0, self.task)
        return pipeline.fit(build_features(self.train, self.spec), self.task.encode(self.train[self.contract.target]))

    def serving_config(self, version: str = "1", threshold: float = 0.5) -> dict[str, Any]:
        """``serving.json`` as packaging writes it: the task, its classes, the training target's summary
        and, for binary, threshold and class names. Keys whose value would be null are left out:
        BentoML refuses None among a model's metadata, which packaging fills from this."""
        task = self.task
        config: dict[str, Any] = {"task": task.name, "classes": list(task.classes),
                                  "target_summary": task.target_summary(task.encode(self.train[self.contract.target])),
                                  "model_version": version}
        if self.contract.is_binary:
            config |= {"threshold": threshold, "positive_class": self.contract.positive_class,
                       "negative_class": self.contract.negative_class}
        return config

    def package(self, root: Path, pipeline: Any, version: str = "1") -> dict[str, Any]:
        """Write ``pipeline`` as a model directory under ``root`` with the contract beside it: what
        :func:`package_in_child` takes."""
        model_dir = root / self.name
        model_dir.mkdir(parents=True)
        save_model(pipeline, model_dir / MODEL_FILE)
        self.spec.to_json(model_dir / FEATURE_SPEC_FILE)
        (model_dir / MODEL_CARD_FILE).write_text(json.dumps({"name": self.name}), encoding="utf-8")
        contract = root / f"{self.name}.yaml"
        contract.write_text(self.contract_yaml(), encoding="utf-8")
        return {"model_dir": str(model_dir), "contract": str(contract), "serving": self.serving_config(version)}


# Runs in a child: BentoML fixes its store path once per process.
PACKAGE_CODE = f"""
import json, sys
from pathlib import Path
from mlops_template.pipeline.packaging import build_bento, save_bento_model
out = {{}}
for name, package in json.loads(sys.argv[1]).items():
    model_dir = Path(package['model_dir'])
    sha256 = (model_dir / '{CHECKSUM_FILE}').read_text().split()[0]
    labels = {{'model_version': package['serving']['model_version'], 'stage': 'test'}}
    tag = save_bento_model(model_dir, Path(package['contract']), package['serving'], name, labels, sha256)
    out[name] = {{'model_tag': tag, 'bento_tag': build_bento(tag, name + '_service', labels, sha256)}}
print(json.dumps(out))
"""


def package_in_child(packages: dict[str, dict[str, Any]], home: Path) -> dict[str, dict[str, str]]:
    """Package model directories (name -> :meth:`TaskData.package`'s result) into the BentoML store
    ``home``, a model and a bento pinned to it each; return name -> ``model_tag``, ``bento_tag``."""
    env = clean_env({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    done = subprocess.run([sys.executable, "-c", PACKAGE_CODE, json.dumps(packages)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"packaging failed:\n{done.stderr[-3000:]}")
    tags: dict[str, dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return tags


def adult_data(train_rows: int = 4000, test_rows: int = 200) -> TaskData:
    """The repository's binary dataset: its contract, and the first valid rows as train and held-out."""
    from mlops_template.pipeline.validation import validate_file

    contract = load_contract(CONTRACT)
    valid = validate_file(RAW, contract).valid
    spec = feature_spec_from(contract, ["fnlwgt", "education"], {"capital_net": "capital_gain - capital_loss"})
    return TaskData("adult", contract, contract.raw, spec, valid.iloc[:train_rows].reset_index(drop=True),
                    valid.iloc[train_rows:train_rows + test_rows].reset_index(drop=True))


def task_data(name: str, test_rows: int = 60, seed: int = 0) -> TaskData:
    """One of :data:`LOADERS` as a contract and train/held-out frames (shuffled with ``seed``)."""
    loader, task, target = LOADERS[name]
    bundle = loader(as_frame=True)
    frame = bundle.frame.rename(columns=lambda c: re.sub(r"\W+", "_", str(c)))
    features = [c for c in frame.columns if c != "target"]
    rng = np.random.default_rng(seed)
    first = frame[max(features, key=lambda c: frame[c].var())]  # the widest feature, cut in thirds
    frame["band"] = pd.cut(first, [-np.inf, *first.quantile([1 / 3, 2 / 3]).tolist(), np.inf],
                           labels=list(BANDS)).astype(object)
    nullable = [features[1], features[-1], "band"]
    for column in nullable:
        frame.loc[rng.random(len(frame)) < NULL_SHARE, column] = np.nan
    classes: list[str] = []
    if task == "multiclass":
        classes = [str(n) for n in getattr(bundle, "target_names", [])] or sorted(frame["target"].astype(str).unique())
        if len(classes) == frame["target"].nunique() and set(frame["target"].unique()) <= set(range(len(classes))):
            frame[target] = [classes[int(i)] for i in frame["target"]]
        else:
            frame[target] = frame["target"].astype(str)
            classes = sorted(frame[target].unique(), key=lambda c: (len(c), c))
    else:
        frame[target] = frame["target"].astype(float)
    frame = frame.drop(columns="target").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    columns: dict[str, Any] = {}
    for column in features:
        values = frame[column].astype(float)
        columns[column] = {"type": "float", "role": "numeric", "nullable": column in nullable,
                           "min": float(values.min()), "max": float(values.max())}
        frame[column] = values
    columns["band"] = {"type": "str", "role": "categorical", "nullable": True, "allowed": list(BANDS)}
    if task == "multiclass":
        columns[target] = {"type": "str", "role": "target", "allowed": classes}
    else:
        columns[target] = {"type": "float", "role": "target"}
    raw = {"name": name, "columns": columns, "target": {"column": target, "task": task}}
    contract = contract_from_dict(raw)
    spec = feature_spec_from(contract, derived=DERIVED.get(name))
    return TaskData(name, contract, raw, spec, frame.iloc[test_rows:].reset_index(drop=True),
                    frame.iloc[:test_rows].reset_index(drop=True))
