"""The accepted data a batch is compared with, and the fixed reference window inside it.

The reference window is the data accepted when the reference was fixed: the raw files present
the first time the guard ran (normally the first raw data), recorded by name, size and sha256
in ``<ingest.reports>/reference-window.json`` (git-tracked). Each batch is compared with all
accepted data and, pooled with everything accepted since the window, with the window itself,
so that many small steps in one direction add up. A recorded file that is missing or changed
stops the guard (raw batches never change); a new contract (another dataset) fixes a new
window. To fix a new window on purpose, after a person has reviewed a real change, delete the
record: the next ingest records the raw data present then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract, read_raw_csv
from mlops_template.core.io import read_json, sha256_of, utc_now, write_json
from mlops_template.ops.guard.marginal import row_keys
from mlops_template.pipeline.validation import (
    FAILED_CHECKS_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    DataValidationError,
    raw_files,
    validate_frame,
)

logger = logging.getLogger(__name__)

WINDOW_RECORD = "reference-window.json"


@dataclass
class Accepted:
    """Typed valid rows already accepted, their row hashes, and which rows form the window.

    ``window`` is True for the rows of the fixed reference window; None means every row is.
    """

    frame: pd.DataFrame
    keys: np.ndarray
    window: np.ndarray | None = None
    _keys_by: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, contract: Contract, window: np.ndarray | None = None) -> Accepted:
        """Wrap validated rows; ``window`` marks the rows of the reference window (default: all)."""
        frame = frame.reset_index(drop=True)
        return cls(frame, row_keys(frame, contract).to_numpy(), window)

    def extend(self, frame: pd.DataFrame, contract: Contract) -> Accepted:
        """The accepted data plus a newly accepted batch's valid rows (outside the window)."""
        window = np.ones(len(self.frame), bool) if self.window is None else self.window
        return Accepted.from_frame(pd.concat([self.frame, frame], ignore_index=True), contract,
                                   np.concatenate([window, np.zeros(len(frame), bool)]))

    def keys_by(self, columns: Sequence[str], contract: Contract) -> np.ndarray:
        """Row hashes over ``columns`` only, computed once per column set."""
        wanted = tuple(columns)
        if wanted not in self._keys_by:
            self._keys_by[wanted] = row_keys(self.frame, contract, wanted).to_numpy()
        return self._keys_by[wanted]

    @property
    def window_frame(self) -> pd.DataFrame:
        """The rows of the fixed reference window."""
        return self.frame if self.window is None else self.frame[self.window]

    @property
    def since_window(self) -> pd.DataFrame:
        """The rows accepted after the window was fixed (empty when there are none)."""
        return self.frame.iloc[0:0] if self.window is None else self.frame[~self.window]


def read_batches(files: Sequence[Path], contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every file read as raw strings, concatenated, with each row's file and line."""
    frames, origins = [], []
    for file in files:
        try:
            frame = read_raw_csv(file, contract)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
            raise DataValidationError(f"raw data file {file} cannot be read as CSV: {exc}") from exc
        frames.append(frame)
        origins.append(pd.DataFrame({SOURCE_FILE_COLUMN: file.name, SOURCE_ROW_COLUMN: range(2, len(frame) + 2)}))
    return pd.concat(frames, ignore_index=True), pd.concat(origins, ignore_index=True)


def load_accepted(raw_dir: str | Path, contract: Contract, window_files: set[str] | None = None) -> Accepted:
    """The valid rows of everything in ``raw_dir``; rows from ``window_files`` form the window."""
    frame, origin = read_batches(raw_files(raw_dir), contract)
    result = validate_frame(frame, contract, origin)
    rejected = set(zip(result.rejected[SOURCE_FILE_COLUMN], result.rejected[SOURCE_ROW_COLUMN], strict=True)) \
        if FAILED_CHECKS_COLUMN in result.rejected else set()
    kept = [(f, r) not in rejected for f, r in zip(origin[SOURCE_FILE_COLUMN], origin[SOURCE_ROW_COLUMN], strict=True)]
    sources = origin[SOURCE_FILE_COLUMN][kept].to_numpy()
    if len(sources) != len(result.valid):  # validation keeps row order; anything else is a bug
        raise DataValidationError("cannot tell which raw file each accepted row came from")
    window = None if window_files is None else np.isin(sources, sorted(window_files))
    return Accepted.from_frame(result.valid, contract, window)


def describe_file(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of a file: how the window and each batch's provenance record it."""
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def reference_window(raw_dir: str | Path, reports_dir: str | Path, contract: Contract,
                     provenance: dict[str, Any] | None = None) -> set[str]:
    """The names of the raw files that form the fixed reference window; fixed on first use.

    Raises DataValidationError when a recorded file is missing or its content changed.
    """
    record_path = Path(reports_dir) / WINDOW_RECORD
    files = raw_files(raw_dir)
    record = read_json(record_path) if record_path.exists() else None
    if record is not None and record.get("contract") == contract.name:
        present = {p.name: p for p in files}
        for entry in record["files"]:
            path = present.get(entry["name"])
            if path is None or sha256_of(path) != entry["sha256"]:
                state = "is missing" if path is None else "changed (sha256 differs)"
                raise DataValidationError(
                    f"raw file {entry['name']} of the reference window {state}; raw batches must never "
                    f"change. If a person reviewed this, delete {record_path} to fix a new window")
        return {entry["name"] for entry in record["files"]}
    if record is not None:
        logger.warning("the reference window in %s is for contract %r, not %r: fixing a new one",
                       record_path, record.get("contract"), contract.name)
    entries = [describe_file(p) for p in files]
    write_json(record_path, {"contract": contract.name, "fixed_at": utc_now(), "files": entries,
                             **({"fixed_by": provenance} if provenance else {})})
    logger.info("fixed the reference window: %s (%s)", ", ".join(e["name"] for e in entries), record_path)
    return {e["name"] for e in entries}
