"""Public datasets of every task, made into the CSVs a team would bring (offline: they ship in PyPI packages).

Each builder returns the first batch (what ``data/raw/`` starts with) and, where the test sends one
through ``retrain``, a later batch. Dirt is added to copies where a case is missing, so that between
them the datasets hold empty cells, an open vocabulary whose later values the first batch never saw,
integer-coded and text-coded classes, a skewed target, a date and several shapes (5 to 14 columns,
178 to 944 rows). :class:`TaskDataset` says what onboarding must infer from each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOWER_IS_BETTER = "lower_is_better"


@dataclass(frozen=True)
class TaskDataset:
    """A public dataset as a CSV of one task, and what onboarding and the pipeline must make of it."""

    name: str
    task: str  # what onboarding must infer without --task
    target: str
    build: Callable[[], tuple[pd.DataFrame, pd.DataFrame | None]]  # first batch, later batch (or None)
    metrics: tuple[str, ...]  # compared offline vs served; the first is the gate's primary metric
    nullable: tuple[str, ...] = ()
    open_vocabulary: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def blank(frame: pd.DataFrame, columns: list[str], share: float, seed: int) -> pd.DataFrame:
    """A copy of ``frame`` with about ``share`` of the cells of ``columns`` emptied (seeded)."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].astype(object)
        frame.loc[rng.random(len(frame)) < share, column] = None
    return frame


def grunfeld() -> tuple[pd.DataFrame, None]:
    """Grunfeld's investment panel (statsmodels): 220 rows x 5, a right-skewed target (skew 3),
    a text column of firms, empty cells added; regression of ``invest``."""
    import statsmodels.api as sm

    frame = sm.datasets.grunfeld.load_pandas().data
    frame["year"] = frame["year"].astype(int)
    frame["firm"] = frame["firm"].astype(str)
    return blank(frame, ["capital", "firm"], 0.05, seed=11), None


def cars() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vega cars: regression of miles per gallon. ``Name`` is an open vocabulary (300 models, most
    seen once, so later rows name models the first batch never saw); the model year is a date;
    a random 30% of the cars comes later."""
    from vega_datasets import local_data

    frame = local_data.cars().dropna(subset=["Miles_per_Gallon"])  # a row without a label cannot train
    frame = blank(frame, ["Acceleration"], 0.05, seed=12)
    frame["Year"] = frame["Year"].dt.strftime("%Y-%m-%d")
    later = np.random.default_rng(16).random(len(frame)) < 0.3
    return frame[~later].reset_index(drop=True), frame[later].reset_index(drop=True)


def wine() -> tuple[pd.DataFrame, None]:
    """UCI wine (scikit-learn): 178 rows x 14, three cultivars named as text, empty cells added;
    column names as the dataset spells them (one holds a ``/``)."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.data.copy()
    frame["cultivar"] = [str(bunch.target_names[i]) for i in bunch.target]
    return blank(frame, ["magnesium", "color_intensity"], 0.05, seed=13), None


def anes96() -> tuple[pd.DataFrame, pd.DataFrame]:
    """1996 US election survey (statsmodels): party identification ``PID``, seven classes coded 0-6,
    empty cells added; a random quarter of the respondents comes later."""
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data
    frame["PID"] = frame["PID"].astype(int)
    frame = blank(frame, ["income", "TVnews"], 0.04, seed=14)
    later = np.random.default_rng(15).random(len(frame)) < 0.25
    return frame[~later].reset_index(drop=True), frame[later].reset_index(drop=True)


TASK_DATASETS = {
    d.name: d for d in (
        TaskDataset("grunfeld", "regression", "invest", grunfeld, ("rmse", "mae"), nullable=("capital", "firm")),
        TaskDataset("cars", "regression", "Miles_per_Gallon", cars, ("rmse", "mae"),
                    nullable=("Horsepower", "Acceleration"), open_vocabulary=("Name",), ignored=("Year",)),
        TaskDataset("wine", "multiclass", "cultivar", wine, ("log_loss", "accuracy"),
                    nullable=("magnesium", "color_intensity")),
        TaskDataset("anes96", "multiclass", "PID", anes96, ("log_loss", "accuracy"), nullable=("income", "TVnews")),
    )
}


def class_name(value: object) -> str:
    """A class label as a string, integral numbers without their ``.0`` (``6.0`` and ``6`` are ``"6"``)."""
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
