"""LightGBM models that live in a skops file as LightGBM's own model text: no pickle anywhere.

``train.estimator: lightgbm`` fits :class:`LightGBMModel` on one machine, and the Dask engine
(:mod:`mlops_template.pipeline.distributed_training`) trains LightGBM across workers and adopts the
result with :meth:`LightGBMModel.adopt`; either way the service loads the same thing.

What a saved model holds is plain data: LightGBM's text format (a string the library itself wrote
and parses), the classes, and a probe: a few rows of model input with the raw outputs the booster
gave for them when it was saved. Loading parses the text and predicts the probe again; any
difference beyond :data:`PARITY_TOLERANCE` refuses the model (a parser that reads the text
differently, a LightGBM version that scores it differently), so a model is never served with
answers other than those it was evaluated with. The file's sha256 is checked before any of this
(:func:`mlops_template.core.artifacts.load_model`), so the text reaching LightGBM's parser is the
text training wrote.

Preprocessing stays in the sklearn Pipeline around it (numeric columns as they are: LightGBM has
its own missing-value handling; categorical columns as ordinal codes over categories fixed at
fit time, given to LightGBM as categorical features), so nothing needs a global fit that a
partitioned dataset could not give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OrdinalEncoder

PARITY_TOLERANCE = 1e-9
PROBE_ROWS = 64
# A category needs this many training rows to get its own code; rarer values are read as missing.
MIN_CATEGORY_ROWS = 10
OBJECTIVES = ("binary", "multiclass", "regression")


class ModelParityError(ValueError):
    """A loaded LightGBM model does not reproduce the outputs recorded when it was saved."""


def frequent_categories(counts: Mapping[str, pd.Series], min_rows: int = MIN_CATEGORY_ROWS) -> dict[str, list[str]]:
    """Per categorical column, its values with at least ``min_rows`` rows, sorted.

    ``counts`` holds each column's value counts (from pandas, or summed over a dataset's
    partitions), so one machine and a cluster choose the same categories from the same data.
    """
    return {name: sorted(str(value) for value, n in values.items() if n >= min_rows)
            for name, values in counts.items()}


def lightgbm_preprocess(numeric: Sequence[str], categorical: Sequence[str],
                        categories: Mapping[str, Sequence[str]] | None = None) -> ColumnTransformer:
    """Numeric columns passed through, categorical ones as ordinal codes (unknown or missing: NaN).

    ``categories`` (from :func:`frequent_categories`) fixes each column's codes before any fit, as
    the training stages do on one machine and on a cluster alike; without it the encoder learns
    them when fitted, values under :data:`MIN_CATEGORY_ROWS` rows sharing one code.
    """
    if categories is None:
        encoder = OrdinalEncoder(min_frequency=MIN_CATEGORY_ROWS, handle_unknown="use_encoded_value",
                                 unknown_value=np.nan, encoded_missing_value=np.nan, dtype=np.float64)
    else:
        encoder = OrdinalEncoder(categories=[list(categories[name]) for name in categorical],
                                 handle_unknown="use_encoded_value", unknown_value=np.nan,
                                 encoded_missing_value=np.nan, dtype=np.float64)
    return ColumnTransformer(
        [("numeric", "passthrough", list(numeric)), ("categorical", encoder, list(categorical))],
        remainder="drop", verbose_feature_names_out=False,
    )


class LightGBMModel(BaseEstimator):
    """A LightGBM booster for one task (``objective``), kept as model text with a parity probe.

    ``categorical_features`` are the positions of the input columns LightGBM treats as
    categories (the ordinal codes of :func:`lightgbm_preprocess`). Hyperparameters are
    LightGBM's own names.
    """

    def __init__(self, objective: str = "binary", n_estimators: int = 300, learning_rate: float = 0.1,
                 num_leaves: int = 31, min_child_samples: int = 20, reg_lambda: float = 0.0,
                 random_state: int | None = None, n_jobs: int | None = None,
                 categorical_features: tuple[int, ...] = ()) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.categorical_features = categorical_features

    # -- fitting -------------------------------------------------------------------------------

    def lightgbm_params(self) -> dict[str, Any]:
        """The keyword arguments of LightGBM's sklearn estimators (and their Dask twins) for this model."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                "reg_lambda": self.reg_lambda, "random_state": self.random_state,
                "n_jobs": self.n_jobs, "verbose": -1, "deterministic": True}

    def fit(self, X: Any, y: Any) -> LightGBMModel:  # noqa: N803 (sklearn's names)
        """Fit in this process; classes are the sorted labels, as sklearn classifiers keep them."""
        import lightgbm

        estimator = (lightgbm.LGBMRegressor if self.objective == "regression" else lightgbm.LGBMClassifier)(
            **self.lightgbm_params())
        matrix = np.asarray(X, dtype=np.float64)
        estimator.fit(matrix, np.asarray(y), categorical_feature=list(self.categorical_features) or "auto")
        classes = getattr(estimator, "classes_", None)
        return self.adopt(estimator.booster_.model_to_string(), classes, matrix)

    def adopt(self, model_text: str, classes: Any, sample: np.ndarray) -> LightGBMModel:
        """Take a trained booster's text (from here or from a cluster) and record its parity probe."""
        import lightgbm

        self._booster = lightgbm.Booster(model_str=model_text)
        self._model_text = model_text
        self.classes_ = None if classes is None else np.asarray(classes)
        sample = np.asarray(sample, dtype=np.float64)
        self.n_features_in_ = sample.shape[1]
        self._probe_rows = sample[:PROBE_ROWS].copy()
        self._probe_output = np.asarray(self._booster.predict(self._probe_rows), dtype=np.float64)
        return self

    # -- predicting ----------------------------------------------------------------------------

    def _raw(self, X: Any) -> np.ndarray:  # noqa: N803
        return np.asarray(self._booster.predict(np.asarray(X, dtype=np.float64)), dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities in ``classes_`` order (classification objectives only)."""
        if self.objective == "regression":
            raise AttributeError("a regression model has no predict_proba")
        output = self._raw(X)
        return np.column_stack([1.0 - output, output]) if output.ndim == 1 else output

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """The predicted value (regression) or class (classification)."""
        if self.objective == "regression":
            return self._raw(X)
        assert self.classes_ is not None
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def model_text(self) -> str:
        """LightGBM's own text of the booster (what ``lightgbm.Booster(model_str=...)`` reads)."""
        return self._model_text

    # -- what skops saves and loads ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Plain data only: hyperparameters, the model text, the classes and the probe."""
        return {"params": self.get_params(), "model_text": self._model_text,
                "classes": None if self.classes_ is None else [str(c) for c in self.classes_.tolist()],
                "classes_dtype": None if self.classes_ is None else self.classes_.dtype.str,
                "probe_rows": self._probe_rows, "probe_output": self._probe_output,
                "n_features_in": int(self.n_features_in_)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Parse the model text and refuse it unless it reproduces the probe's recorded outputs."""
        import lightgbm

        params = dict(state["params"])
        params["categorical_features"] = tuple(params.get("categorical_features") or ())
        self.__init__(**params)  # type: ignore[misc]
        self._model_text = str(state["model_text"])
        self._booster = lightgbm.Booster(model_str=self._model_text)
        classes = state["classes"]
        self.classes_ = None if classes is None else np.asarray(classes).astype(state["classes_dtype"])
        self.n_features_in_ = int(state["n_features_in"])
        self._probe_rows = np.asarray(state["probe_rows"], dtype=np.float64)
        self._probe_output = np.asarray(state["probe_output"], dtype=np.float64)
        check_parity(self._probe_output, self._raw(self._probe_rows))


def check_parity(recorded: np.ndarray, replayed: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> None:
    """ModelParityError unless ``replayed`` equals ``recorded`` within ``tolerance`` everywhere."""
    if recorded.shape != replayed.shape:
        raise ModelParityError(f"LightGBM model output has shape {replayed.shape}, recorded {recorded.shape}")
    difference = float(np.max(np.abs(recorded - replayed), initial=0.0))
    if not difference <= tolerance:
        raise ModelParityError(f"LightGBM model reproduces its recorded outputs only to {difference:.3g} "
                               f"(tolerance {tolerance:g}): refusing to load it")
