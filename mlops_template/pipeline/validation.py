"""Validate raw data against the contract: split valid rows from rejected ones, with reasons."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlops_template.core.contract import Contract, build_schema, read_raw_csv

logger = logging.getLogger(__name__)

FAILED_CHECKS_COLUMN = "failed_checks"
SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"
RAW_SUFFIXES = (".csv", ".csv.gz")
MAX_PASSES = 5
INTEGRAL_FLOAT_SUFFIX = r"(?<=\d)\.0*$"
EXAMPLES_PER_CHECK = 3


class DataValidationError(RuntimeError):
    """The data cannot be used at all: the pipeline must stop and say why."""


@dataclass
class ValidationResult:
    """Valid rows (typed), rejected rows (raw strings plus reasons) and counts per check."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    rows_in: int
    failures_by_check: dict[str, int]
    examples_by_check: dict[str, list[str]] = field(default_factory=dict)
    na_values: tuple[str, ...] = ()

    @property
    def rejected_share(self) -> float:
        """Share of input rows that were rejected."""
        return len(self.rejected) / self.rows_in if self.rows_in else 0.0

    def summary(self) -> dict:
        """JSON-ready counts for ``metrics/validation.json``."""
        return {
            "rows_in": self.rows_in,
            "rows_valid": len(self.valid),
            "rows_rejected": len(self.rejected),
            "rejected_share": round(self.rejected_share, 6),
            "failures_by_check": dict(sorted(self.failures_by_check.items())),
        }


def _check_name(row: pd.Series) -> str:
    if row["check"] == "multiple_fields_uniqueness":
        return "row:duplicate"
    column = row["column"] if isinstance(row["column"], str) else "row"
    return f"{column}:{row['check']}"


def _check_columns(frame: pd.DataFrame, contract: Contract, source: str = "the data") -> None:
    expected = contract.column_names
    missing = [c for c in expected if c not in frame.columns]
    unexpected = [c for c in frame.columns if c not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unexpected:
            parts.append(f"unexpected column(s) {unexpected}")
        raise DataValidationError(
            f"{source} does not match contract {contract.name!r}: {'; '.join(parts)}. "
            f"Expected columns: {expected}"
        )


def normalise_integral_floats(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Rewrite integral values written as floats (``129.0``) as integers in ``int`` columns.

    Exports from tools that store integers as floats (pandas with missing values, spreadsheets)
    write them so; they are integers the contract accepts as written, while ``129.5`` still fails
    the column's type check.
    """
    columns = [c.name for c in contract.columns if c.type == "int" and c.name in frame.columns]
    if not columns:
        return frame
    frame = frame.copy()
    for name in columns:
        values = frame[name]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            frame[name] = values.str.replace(INTEGRAL_FLOAT_SUFFIX, "", regex=True)
    return frame


def shown_value(value: object) -> str:
    """A failing value as the report shows it: missing as an empty string."""
    return "" if value is None or value is pd.NA else str(value)


def record_cases(row_cases: pd.DataFrame, reasons: dict[int, list[str]], counts: Counter[str],
                 examples: dict[str, list[str]]) -> None:
    """Add pandera's row-level failure cases (in their order) to the reasons per row, counts and examples.

    Shared by :func:`validate_frame` and the partitioned path, so both name and count alike.
    """
    for _, case in row_cases.iterrows():
        name = _check_name(case)
        index = int(case["index"])
        if name not in reasons.setdefault(index, []):
            reasons[index].append(name)
            counts[name] += 1
            seen = examples.setdefault(name, [])
            shown = shown_value(case["failure_case"])
            if len(seen) < EXAMPLES_PER_CHECK and shown not in seen:
                seen.append(shown)


def validate_frame(
    frame: pd.DataFrame, contract: Contract, origin: pd.DataFrame | None = None
) -> ValidationResult:
    """Check every row against the contract, lazily, collecting all failures.

    pandera stops checking a column once its type coercion fails, so rows that fail are set
    aside and the rest is checked again until a pass finds nothing new. ``origin`` (file and
    line of each row, aligned with ``frame``) is copied onto rejected rows.
    """
    if frame.empty:
        raise DataValidationError("the data has no rows")
    _check_columns(frame, contract)
    import pandera.errors

    schema = build_schema(contract)
    frame = frame.reset_index(drop=True)
    remaining = normalise_integral_floats(frame, contract)
    reasons: dict[int, list[str]] = {}
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for _ in range(MAX_PASSES):
        try:
            validated = schema.validate(remaining, lazy=True)
            break
        except pandera.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            row_cases = cases[cases["index"].notna()]
            frame_cases = cases[cases["index"].isna()]
            if not frame_cases.empty and row_cases.empty:
                details = "; ".join(
                    f"{_check_name(r)} failed with {r['failure_case']!r}"
                    for _, r in frame_cases.head(10).iterrows()
                )
                raise DataValidationError(f"the data fails contract {contract.name!r}: {details}") from exc
            record_cases(row_cases, reasons, counts, examples)
            remaining = remaining.drop(index=[i for i in reasons if i in remaining.index])
            if remaining.empty:
                validated = remaining
                break
    else:
        raise DataValidationError(f"validation did not settle after {MAX_PASSES} passes")

    rejected = frame.loc[sorted(reasons)].copy()
    if origin is None:
        origin = pd.DataFrame({SOURCE_ROW_COLUMN: frame.index + 2})  # 1-based, after the header
    rejected = origin.reset_index(drop=True).loc[rejected.index].join(rejected)
    rejected[FAILED_CHECKS_COLUMN] = ["; ".join(reasons[i]) for i in rejected.index]
    if validated.empty:
        validated = pd.DataFrame(columns=contract.column_names)
    return ValidationResult(
        valid=validated.reset_index(drop=True),
        rejected=rejected.reset_index(drop=True),
        rows_in=len(frame),
        failures_by_check=dict(counts),
        examples_by_check=examples,
        na_values=contract.na_values,
    )


def raw_files(path: str | Path) -> list[Path]:
    """The CSV files a raw-data path stands for: the file itself, or a folder's CSVs in name order.

    A folder lets new batches arrive as new files, which DVC sees as a change of the folder.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(RAW_SUFFIXES))
        if not files:
            raise DataValidationError(f"raw data folder {path} holds no .csv or .csv.gz file")
        return files
    if not path.exists():
        raise DataValidationError(f"raw data file {path} does not exist")
    return [path]


def _read_one(path: Path, contract: Contract) -> pd.DataFrame:
    try:
        frame = read_raw_csv(path, contract)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataValidationError(f"raw data file {path} cannot be read as CSV: {exc}") from exc
    if frame.empty:
        raise DataValidationError(f"raw data file {path} has no rows")
    _check_columns(frame, contract, source=str(path))
    logger.info("read %d rows x %d columns from %s", len(frame), frame.shape[1], path)
    return frame


def validate_file(path: str | Path, contract: Contract) -> ValidationResult:
    """Read a raw CSV (gzip allowed), or every CSV in a folder, and validate all rows together.

    Unreadable or empty files and missing or unexpected columns raise DataValidationError
    naming the file; duplicates are found across files too.
    """
    frames, origins = [], []
    for file in raw_files(path):
        frame = _read_one(file, contract)
        frames.append(frame)
        origins.append(pd.DataFrame({SOURCE_FILE_COLUMN: file.name, SOURCE_ROW_COLUMN: range(2, len(frame) + 2)}))
    frame = pd.concat(frames, ignore_index=True)
    return validate_frame(frame, contract, pd.concat(origins, ignore_index=True))


def describe_rejections(result: ValidationResult, sample_rows: int = 5) -> str:
    """A human-readable account of which checks failed and on which rows."""
    lines = [
        f"{len(result.rejected)} of {result.rows_in} rows rejected "
        f"({result.rejected_share:.2%}); failures by check:"
    ]
    for check, count in sorted(result.failures_by_check.items(), key=lambda kv: -kv[1]):
        examples = result.examples_by_check.get(check, [])
        shown = f" (values such as {', '.join(repr(e) for e in examples)})" if examples else ""
        lines.append(f"  {check}: {count} rows{shown}")
        if "" in examples and "" not in result.na_values:
            lines.append("    empty cells are not read as missing: add '' to read.na_values in the "
                         "contract (and nullable: true to the column if it may be empty)")
    if not result.rejected.empty:
        lines.append(f"first {min(sample_rows, len(result.rejected))} rejected rows (line: checks):")
        for _, row in result.rejected.head(sample_rows).iterrows():
            where = f"{row[SOURCE_FILE_COLUMN]}:" if SOURCE_FILE_COLUMN in row else "line "
            lines.append(f"  {where}{row[SOURCE_ROW_COLUMN]}: {row[FAILED_CHECKS_COLUMN]}")
    return "\n".join(lines)
