"""LightGBM kept as its own model text inside a skops file, checked against a probe when loaded."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from mlops_template.core.artifacts import load_model, model_types, save_model
from mlops_template.core.boosting import (
    LightGBMModel,
    ModelParityError,
    frequent_categories,
    lightgbm_preprocess,
)
from mlops_template.core.tasks import RegressionTask, task_of
from mlops_template.pipeline.training import BINARY_ON_LABELS


def rows(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    city = rng.choice(["north", "south", "east", "rare-town"], n, p=[0.4, 0.35, 0.24, 0.01])
    frame = pd.DataFrame({"x": np.where(rng.random(n) < 0.1, np.nan, x), "city": city})
    labels = ((x + (city == "north") + rng.normal(scale=0.5, size=n)) > 0.5).astype(int)
    return frame, labels


def fitted(objective: str = "binary") -> tuple[Pipeline, pd.DataFrame, np.ndarray]:
    frame, labels = rows()
    categories = frequent_categories({"city": frame["city"].value_counts()})
    model = LightGBMModel(objective=objective, n_estimators=20, categorical_features=(1,), random_state=0)
    pipeline = Pipeline([("preprocess", lightgbm_preprocess(["x"], ["city"], categories)), ("estimator", model)])
    target = labels if objective != "regression" else labels + frame["x"].fillna(0).to_numpy()
    return pipeline.fit(frame, target), frame, target


def test_frequent_categories_drop_rare_values_and_the_encoder_reads_them_as_missing() -> None:
    frame, _ = rows()
    categories = frequent_categories({"city": frame["city"].value_counts()})
    assert categories == {"city": ["east", "north", "south"]}
    encoded = lightgbm_preprocess(["x"], ["city"], categories).fit_transform(
        pd.DataFrame({"x": [1.0, np.nan], "city": ["rare-town", "north"]}))
    assert np.isnan(encoded[0, 1]) and encoded[1, 1] == 1.0 and np.isnan(encoded[1, 0])


@pytest.mark.parametrize("objective", ["binary", "regression"])
def test_the_saved_file_holds_lightgbm_text_and_loads_to_the_same_answers(tmp_path: Path, objective: str) -> None:
    pipeline, frame, _ = fitted(objective)
    save_model(pipeline, tmp_path / "model.skops")
    loaded = load_model(tmp_path / "model.skops")
    task = RegressionTask("y") if objective == "regression" else BINARY_ON_LABELS
    np.testing.assert_array_equal(task.predict(loaded, frame), task.predict(pipeline, frame))
    text = loaded[-1].model_text
    assert text.startswith("tree\nversion=")  # LightGBM's own format, readable by LightGBM alone
    matrix = pipeline[0].transform(frame)
    np.testing.assert_array_equal(lightgbm.Booster(model_str=text).predict(matrix), loaded[-1]._raw(matrix))
    assert "mlops_template.core.boosting.LightGBMModel" in model_types(tmp_path / "model.skops")


def test_a_model_that_does_not_reproduce_its_probe_is_refused(tmp_path: Path) -> None:
    """A booster whose outputs differ from those recorded when it was saved never loads."""
    pipeline, _, _ = fitted()
    pipeline[-1]._probe_output = pipeline[-1]._probe_output + 1e-6  # as if the text scored differently now
    save_model(pipeline, tmp_path / "model.skops")
    with pytest.raises(ModelParityError, match="reproduces its recorded outputs only to 1e-06"):
        load_model(tmp_path / "model.skops")


def test_the_task_sets_the_objective_and_integer_classes_survive_the_file(tmp_path: Path) -> None:
    from mlops_template.core.contract import contract_from_dict

    contract = contract_from_dict({"name": "m", "target": {"column": "y", "task": "multiclass"}, "columns": {
        "y": {"type": "str", "role": "target", "allowed": ["a", "b", "c"]},
        "x": {"type": "float", "role": "numeric"}}})
    assert task_of(contract).estimator("lightgbm", {}, 0).objective == "multiclass"
    pipeline, frame, labels = fitted()
    assert pipeline[-1].classes_.dtype.kind == "i"
    save_model(pipeline, tmp_path / "model.skops")
    loaded = load_model(tmp_path / "model.skops")
    assert loaded.classes_.tolist() == [0, 1] and loaded.classes_.dtype == pipeline.classes_.dtype
    assert (loaded.predict(frame) == labels).mean() > 0.7
