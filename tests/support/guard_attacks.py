"""Poisoned batches for any dataset: the attacks the bad-batch guard must stop, built generically.

Each function takes clean held-out rows (raw strings, as a batch file is read) and returns a
crafted batch; none knows Adult's columns: the target, the group a flip aims at and the column
the model ignores come from :class:`tests.support.guard_data.Dataset`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_template.ops.guard import Accepted
from tests.support.guard_data import Dataset


def as_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed rows back to the raw strings a batch file holds (missing stays missing)."""
    out = {}
    for name, values in frame.items():
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            values = values.astype("Int64")
        out[name] = values.astype("string").astype(object)
    return pd.DataFrame(out).where(frame.notna().to_numpy(), None)


def targeted_flip(batch: pd.DataFrame, data: Dataset, share: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """``share`` of the rows of ``data.group`` with the positive label relabelled negative."""
    column, value = data.group
    target = data.contract.target
    rows = np.flatnonzero((batch[column] == value) & (batch[target] == data.positive))
    chosen = np.random.default_rng(seed).permutation(rows)[:round(share * len(rows))]
    out = batch.copy()
    out.loc[chosen, target] = data.negative
    return out


def rare_value(data: Dataset, accepted: Accepted) -> tuple[str, str]:
    """The categorical (column, value) with the fewest accepted rows (at least one)."""
    best = None
    for column in data.contract.columns_with_role("categorical"):
        counts = accepted.frame[column].astype("string").value_counts()
        counts = counts[counts > 0]
        if len(counts) and (best is None or counts.min() < best[2]):
            best = (column, str(counts.idxmin()), int(counts.min()))
    assert best is not None, "no categorical column"
    return best[0], best[1]


def backdoor(batch: pd.DataFrame, data: Dataset, accepted: Accepted, rows: int) -> pd.DataFrame:
    """``rows`` negative rows given the rarest categorical value and relabelled positive."""
    column, value = rare_value(data, accepted)
    target = data.contract.target
    chosen = np.flatnonzero(batch[target] == data.negative)[:rows]
    out = batch.copy()
    out.loc[chosen, column] = value
    out.loc[chosen, target] = data.positive
    return out


def flipped_copies(batch: pd.DataFrame, data: Dataset, accepted: Accepted, rows: int, seed: int = 0) -> pd.DataFrame:
    """The batch with ``rows`` of its rows replaced by accepted rows whose label is flipped."""
    copies = as_raw(accepted.frame.sample(rows, random_state=seed))
    target = data.contract.target
    copies[target] = np.where(copies[target] == data.positive, data.negative, data.positive)
    return pd.concat([batch.iloc[rows:], copies], ignore_index=True)


def ignored_variants(batch: pd.DataFrame, data: Dataset, rows: int, copies: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows of the batch each sent ``copies`` times, varying only a column the model ignores.

    This is how a batch's author rolls dice for the train/test split: each variant hashes to its
    own side, while the model sees the same row every time.
    """
    rng = np.random.default_rng(seed)
    sources = batch.iloc[:rows]
    variants = pd.concat([sources] * copies, ignore_index=True)
    spec = next(c for c in data.contract.columns if c.name == data.ignored)
    low = int(spec.min) if spec.min is not None else 1
    high = int(spec.max) if spec.max is not None else 10**9
    variants[data.ignored] = [str(v) for v in rng.integers(low, high, len(variants))]
    return pd.concat([batch.iloc[rows * copies:], variants], ignore_index=True)
