"""Seeded train/test splits that stay put as data grows."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def in_test_set(data: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """True for the rows that belong to the test set, decided by a salted hash of each row.

    A row's side depends only on its own values and the seed, never on the other rows, so a
    row once in the test set stays there when new batches arrive: the champion is never scored
    on rows it was trained on, and a challenger trained on more data is compared fairly.
    The hash ignores the label, so each class's test share is ``test_size`` in expectation
    (stratified on average rather than exactly; the split logs the realised shares).
    """
    salt = f"{seed:016d}"[-16:]
    hashes = pd.util.hash_pandas_object(data, index=False, hash_key=salt).to_numpy()
    return hashes < np.uint64(test_size * 2**64)


def split_train_test(
    data: pd.DataFrame, target: str, test_size: float, seed: int, reference_rows: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train and test sets by stable row hash, plus a reference sample of the train set.

    The reference sample is what production traffic is compared with for drift, so it is drawn
    from the data the model learned from.
    """
    in_test = in_test_set(data, test_size, seed)
    train, test = data[~in_test], data[in_test]
    for label, share in test.groupby(target).size().div(data.groupby(target).size()).items():
        logger.info("class %s: %.1f%% of rows in the test set", label, 100 * share)
    reference = train.sample(n=min(reference_rows, len(train)), random_state=seed)
    return (
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        reference.reset_index(drop=True),
    )
