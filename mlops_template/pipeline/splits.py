"""Train/test splits that stay put as data grows and that a batch's author cannot steer.

Threat model: someone who can write a batch of labelled rows (a CRM export, a labelling
vendor, an insider with access to ``data/incoming/``) but not the training machine's files.
If that person could tell which of their rows land in the test set, they could keep poisoned
rows out of it (so the gate never sees their effect) or fill it with rows that flatter a
poisoned model. So a row's side is a keyed hash of the row, and the key is a secret kept
outside git:

- ``SPLIT_SALT`` (environment): the salt itself, for CI and team machines (from a secret store);
- else the file named by ``SPLIT_SALT_FILE``, by default ``.dvc/tmp/split-salt`` in the project
  root (git-ignored; ``dvc exp run --temp`` resolves it in the parent repository), created with
  a random salt on first use (mode 0600, logged).

The hash covers the input columns only: never the label (a label flip cannot move a row
across), so each class's test share is ``test_size`` in expectation. Deterministic: a given
salt, seed and row always give the same side, so ``dvc repro`` on one machine is reproducible
and rows keep their side when batches arrive. Deleting the salt, or a new machine drawing its
own, reshuffles the split: share the salt (``SPLIT_SALT``) between machines that must agree.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_template.core.config import project_root

logger = logging.getLogger(__name__)

SALT_ENV = "SPLIT_SALT"
SALT_FILE_ENV = "SPLIT_SALT_FILE"
DEFAULT_SALT_FILE = Path(".dvc/tmp/split-salt")
MIN_SALT_CHARS = 16
MAX_LOGGED_CLASSES = 50  # the test share is logged per target value up to this many values


class SplitSaltError(RuntimeError):
    """The split salt is unusable (too short, unreadable)."""


def salt_file() -> Path:
    """Where the secret salt lives: ``SPLIT_SALT_FILE``, else ``.dvc/tmp/split-salt`` in the project."""
    configured = os.environ.get(SALT_FILE_ENV)
    return Path(configured) if configured else project_root() / DEFAULT_SALT_FILE


def split_salt() -> str:
    """The secret salt: ``SPLIT_SALT``, else the salt file, created with a random salt on first use."""
    salt = os.environ.get(SALT_ENV)
    source = f"${SALT_ENV}"
    if not salt:
        path = salt_file()
        source = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SplitSaltError(f"cannot create the split salt file {path}: {exc}; set {SALT_ENV}") from exc
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            logger.warning("created a new secret split salt in %s: keep it (rows' train/test sides depend "
                           "on it) and out of git; set %s to share it between machines", path, SALT_ENV)
        try:
            salt = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SplitSaltError(f"cannot read the split salt file {path}: {exc}") from exc
    if len(salt) < MIN_SALT_CHARS:
        raise SplitSaltError(f"the split salt from {source} has {len(salt)} characters; at least "
                             f"{MIN_SALT_CHARS} are needed (a random one: python -c 'import secrets; "
                             f"print(secrets.token_hex(32))')")
    return salt


def hash_key(salt: str, seed: int) -> str:
    """The 16-character key pandas' row hash takes, derived from the secret salt and the seed."""
    digest = hashlib.sha256(f"{salt}\0{seed}".encode()).digest()
    return base64.b64encode(digest[:12]).decode("ascii")  # 16 characters, 96 bits


def in_test_set(data: pd.DataFrame, test_size: float, seed: int, salt: str | None = None,
                columns: Sequence[str] | None = None) -> np.ndarray:
    """True for the rows that belong to the test set, decided by a keyed hash of each row.

    A row's side depends only on its values in ``columns`` (default: all of ``data``'s
    columns; callers pass the input columns, never the label), the seed and the secret
    ``salt`` (default :func:`split_salt`), never on the other rows: a row once in the test set
    stays there when new batches arrive, so the champion is never scored on rows it was
    trained on, and nobody without the salt can tell which side a row they wrote will take.
    Numbers are hashed as float64, text as text, so a dtype change (int64 to nullable Int64)
    does not move a row.
    """
    key = hash_key(salt if salt is not None else split_salt(), seed)
    frame = data[list(columns)] if columns is not None else data
    canonical = pd.DataFrame({
        name: (values.astype("float64") if pd.api.types.is_numeric_dtype(values)
               else values.astype(object).where(values.notna(), "\0missing").astype(str))
        for name, values in frame.items()})
    hashes = pd.util.hash_pandas_object(canonical, index=False, hash_key=key).to_numpy()
    return hashes < np.uint64(test_size * 2**64)


def split_train_test(
    data: pd.DataFrame, target: str, test_size: float, seed: int, reference_rows: int,
    salt: str | None = None, columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train and test sets by keyed row hash, plus a reference sample of the train set.

    The hash covers ``columns`` (default: every column of ``data`` but ``target``) and never
    the label. The reference sample is what production traffic is compared with for drift, so
    it is drawn from the data the model learned from.
    """
    columns = [c for c in (columns if columns is not None else data.columns) if c != target]
    in_test = in_test_set(data, test_size, seed, salt, columns)
    train, test = data[~in_test], data[in_test]
    if data[target].nunique() <= MAX_LOGGED_CLASSES:  # classes; a numeric target's values are not
        for label, share in test.groupby(target).size().div(data.groupby(target).size()).items():
            logger.info("class %s: %.1f%% of rows in the test set", label, 100 * share)
    else:
        logger.info("%.1f%% of rows in the test set", 100 * len(test) / max(len(data), 1))
    reference = train.sample(n=min(reference_rows, len(train)), random_state=seed)
    return (
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        reference.reset_index(drop=True),
    )
