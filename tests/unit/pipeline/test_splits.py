"""The train/test split: keyed by a secret salt, blind to the label, stable as data grows."""

from __future__ import annotations

import stat

import numpy as np
import pandas as pd
import pytest

from mlops_template.pipeline import splits
from mlops_template.pipeline.splits import SplitSaltError, in_test_set, split_salt, split_train_test
from tests.support.guard_attacks import ignored_variants
from tests.support.guard_data import LOADERS

SALT = "a-secret-salt-of-the-training-machine"
TEST_SIZE, SEED = 0.2, 42


@pytest.fixture(autouse=True)
def _no_salt_from_outside(monkeypatch, tmp_path):
    """Each test sees only the salt it sets: the default file lives in a scratch project."""
    monkeypatch.delenv(splits.SALT_ENV, raising=False)
    monkeypatch.delenv(splits.SALT_FILE_ENV, raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)


def public_key_in_test(frame: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """The split before the secret salt: the hash of every column (label included), keyed by
    the seed in params.yaml. Anyone with the repository can compute it: the attacker's model."""
    salt = f"{seed:016d}"[-16:]
    hashes = pd.util.hash_pandas_object(frame, index=False, hash_key=salt).to_numpy()
    return hashes < np.uint64(test_size * 2**64)


@pytest.fixture(scope="module")
def adult():
    data = LOADERS["adult"]()
    from mlops_template.pipeline.validation import validate_frame

    return data, validate_frame(data.raw.head(6000), data.contract).valid


def inputs(data) -> list[str]:
    return [c for c in data.contract.column_names if c != data.contract.target]


def test_rows_placed_into_the_test_set_by_varying_an_ignored_column_are_not_placed(adult):
    """The attacker grinds fnlwgt until each poisoned row hashes into the test set, with the
    key they can compute; with the secret salt the rows land there at the base rate only."""
    data, frame = adult
    from mlops_template.pipeline.validation import validate_frame

    raw = ignored_variants(data.raw.iloc[6000:6300].reset_index(drop=True), data, 300, 20, seed=1)
    candidates = validate_frame(raw, data.contract).valid  # 20 variants of each of 300 rows
    chosen = candidates[public_key_in_test(candidates, TEST_SIZE, SEED)]
    chosen = chosen.groupby(chosen[inputs(data)].drop(columns=data.ignored).apply(tuple, axis=1)).head(1)
    assert len(chosen) > 250  # the grind works: one test-set variant for nearly every row
    assert public_key_in_test(chosen, TEST_SIZE, SEED).mean() == 1.0  # placed, under the public key

    placed = in_test_set(chosen, TEST_SIZE, SEED, SALT, inputs(data)).mean()
    assert placed < 0.35, f"{placed:.0%} of the crafted rows are in the test set"  # base rate 20%


def test_the_label_does_not_move_a_row(adult):
    data, frame = adult
    target = data.contract.target
    flipped = frame.assign(**{target: np.where(frame[target] == data.positive, data.negative, data.positive)})
    _, test, _ = split_train_test(frame, target, TEST_SIZE, SEED, 10, SALT)
    _, test_flipped, _ = split_train_test(flipped, target, TEST_SIZE, SEED, 10, SALT)
    assert test.drop(columns=target).equals(test_flipped.drop(columns=target))


def test_rows_keep_their_side_when_batches_arrive(adult):
    data, frame = adult
    target = data.contract.target
    first = in_test_set(frame.head(4000), TEST_SIZE, SEED, SALT, inputs(data))
    grown = in_test_set(frame, TEST_SIZE, SEED, SALT, inputs(data))
    assert (grown[:4000] == first).all()
    assert 0.17 < grown.mean() < 0.23
    _, test, _ = split_train_test(frame, target, TEST_SIZE, SEED, 10, SALT)
    assert len(test) == grown.sum()


def test_a_row_keeps_its_side_when_an_int_column_becomes_nullable(adult):
    data, frame = adult
    nullable = frame.assign(age=frame["age"].astype("Int64"))
    assert (in_test_set(frame, TEST_SIZE, SEED, SALT) == in_test_set(nullable, TEST_SIZE, SEED, SALT)).all()


def test_the_salt_decides_the_split(adult):
    _, frame = adult
    assert (in_test_set(frame, TEST_SIZE, SEED, SALT) != in_test_set(frame, TEST_SIZE, SEED, SALT + "x")).any()


def test_the_salt_file_is_created_once_private_and_reused(tmp_path, caplog):
    first = split_salt()
    path = tmp_path / ".dvc/tmp/split-salt"
    assert path.read_text().strip() == first and len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "created a new secret split salt" in caplog.text
    assert split_salt() == first  # the same machine: the same split, dvc repro stays reproducible


def test_split_salt_env_wins_and_split_salt_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(splits.SALT_FILE_ENV, str(tmp_path / "elsewhere" / "salt"))
    from_file = split_salt()
    assert (tmp_path / "elsewhere/salt").read_text().strip() == from_file
    monkeypatch.setenv(splits.SALT_ENV, SALT)
    assert split_salt() == SALT


def test_a_short_salt_is_refused(monkeypatch):
    monkeypatch.setenv(splits.SALT_ENV, "short")
    with pytest.raises(SplitSaltError, match="at least 16"):
        split_salt()
