"""Seeded, stratified splits of validated data."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split


def split_train_test(
    data: pd.DataFrame, target: str, test_size: float, seed: int, reference_rows: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train and test sets stratified on the target, plus a reference sample of the train set.

    The reference sample is what production traffic is compared with for drift, so it is drawn
    from the data the model learned from.
    """
    train, test = train_test_split(
        data, test_size=test_size, random_state=seed, stratify=data[target]
    )
    reference = train.sample(n=min(reference_rows, len(train)), random_state=seed)
    return (
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        reference.reset_index(drop=True),
    )
