"""Validate raw data on a Dask cluster, partition by partition, with the single-process result.

Each partition (a byte range of a plain CSV, or a piece of a ``.csv.gz`` as it streams) is read,
checked and written by a worker; the client holds only small things: 8 bytes per row of hashes,
the rejected rows, counts. The result equals :func:`~mlops_template.pipeline.validation.validate_file` on the same
data: same rejected rows (file, line, checks in the same order), counts, examples and valid rows.

Why this is more than "validate_frame per partition": the single path is a sequence of global
pandera passes, and two things in a pass depend on rows elsewhere in the data.

* Duplicates (``unique_rows``): a later copy may sit in another partition or file. Each pass first
  hashes every remaining row's values as pandera compares them; the client finds repeated hashes,
  fetches only those rows, confirms equality by value (so a hash collision cannot reject a row),
  and sends each partition a copy of the first occurrence of its duplicates, placed in front of
  its rows, so pandera's own uniqueness check flags exactly the global later copies.
* A column whose coercion fails anywhere stays text in that pass, which hides its range/allowed
  failures on every row (they show in the next pass, unless the row was already rejected). A
  partition that lacks such a row gets one sentinel row with an uncoercible value in that column.

Sentinel rows carry negative index labels; their failures are dropped before counting.

Memory: a worker holds one partition at a time. The first read parses the CSV and stages the
partition's raw text as parquet beside the output (removed at the end); every later pass reads it
from there, so no partition stays in memory between tasks and the workers' memory does not grow
with the data. The client holds 8 bytes per row of hashes (plus a transient hash table in
``duplicated``), the rows whose hash repeats, and the quarantine.
Limitation (as ``dask.dataframe.read_csv``): CSV text is split at newlines, so quoted fields
holding newlines need a ``blocksize`` larger than the (decompressed) file.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract, build_schema
from mlops_template.pipeline.csv_partitions import Block, plan_blocks, read_gzip_partitions, read_partition
from mlops_template.pipeline.distributed_report import DUPLICATE_CHECK, duplicate_examples, merge_pass
from mlops_template.pipeline.validation import (
    FAILED_CHECKS_COLUMN,
    MAX_PASSES,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    DataValidationError,
    ValidationResult,
    _check_name,
    normalise_integral_floats,
    record_cases,
)

if TYPE_CHECKING:
    import distributed

logger = logging.getLogger(__name__)

FORCE_VALUE = "<not a number: sentinel>"   # fails int and float coercion
FORCE_LABEL = -(10**15)


@dataclass
class PartitionedValidationResult(ValidationResult):
    """A :class:`ValidationResult` whose valid rows stay on disk: ``valid`` is None.

    ``valid_rows`` counts them and ``valid_dir`` holds them as ``part-NNNNN.parquet`` files, one
    per partition in data order (reading the folder gives the single path's frame).
    """

    valid_rows: int = 0
    valid_dir: Path | None = None
    partitions: int = 0

    def summary(self) -> dict:
        """JSON-ready counts for ``metrics/validation.json`` (same keys as the single path)."""
        return {
            "rows_in": self.rows_in,
            "rows_valid": self.valid_rows,
            "rows_rejected": len(self.rejected),
            "rejected_share": round(self.rejected_share, 6),
            "failures_by_check": dict(sorted(self.failures_by_check.items())),
        }


def _normalised(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """``normalise_integral_floats`` of the frame, sharing the untouched columns with it (copy on write)."""
    ints = [c.name for c in contract.columns if c.type == "int"]
    return frame.assign(**normalise_integral_floats(frame[ints], contract)) if ints else frame


def _uncoercible(frame: pd.DataFrame, schema: Any, among: set[str] | None = None) -> set[str]:
    """Columns (of ``among``, default all) pandera's coercion fails on for some row: they stay text in a pass."""
    import pandera.errors

    failing = set()
    for name, column in schema.columns.items():
        if among is not None and name not in among:
            continue
        try:
            column.coerce_dtype(frame[name])
        except (pandera.errors.SchemaError, pandera.errors.SchemaErrors):
            failing.add(name)
    return failing


def _keys(frame: pd.DataFrame, schema: Any, uncoerced: set[str]) -> pd.DataFrame:
    """The values pandera's uniqueness check compares in a pass: coerced, or text where coercion fails."""
    return pd.DataFrame({name: frame[name] if name in uncoerced else column.coerce_dtype(frame[name])
                         for name, column in schema.columns.items()}, index=frame.index)


def _row_hashes(keys: pd.DataFrame) -> np.ndarray:
    """64-bit hash per row; rows ``duplicated()`` calls equal hash equal (-0.0/0.0 and NaNs made one)."""
    canon = {}
    for name, values in keys.items():
        if pd.api.types.is_float_dtype(values):
            floats = values.to_numpy(dtype=float, na_value=np.nan)
            values = pd.Series(np.where(np.isnan(floats), np.nan, floats + 0.0))
        canon[name] = values.reset_index(drop=True)
    return pd.util.hash_pandas_object(pd.DataFrame(canon), index=False).to_numpy()


def _staged(frame: pd.DataFrame, path: str, contract: Contract) -> tuple:
    """Stage a partition's raw rows at ``path``: (path, row count, :func:`_next_keys`)."""
    frame.to_parquet(path, index=False)   # string columns come back identical (missing values too)
    return path, len(frame), _next_keys(_normalised(frame, contract), contract, None)


def _stage(block: Block, contract: Contract, staged: str, blocksize: int) -> list[tuple]:
    """Parse a block and stage it as one partition, or a gzip file as one per ``blocksize`` piece."""
    if not block.is_gzip:
        return [_staged(read_partition(block, contract), staged, contract)]
    stem = Path(staged).with_suffix("")
    return [_staged(frame, f"{stem}-{piece:05d}.parquet", contract)
            for piece, frame in enumerate(read_gzip_partitions(block, contract, blocksize))]


def _frames(staged: str, contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A staged partition's raw rows (for the quarantine) and the rows pandera sees."""
    frame = pd.read_parquet(staged)
    return frame, _normalised(frame, contract)


def _next_keys(frame: pd.DataFrame, contract: Contract, among: set[str] | None) -> tuple:
    """Columns failing coercion here, and the row hashes under them: reused when no partition differs."""
    schema = build_schema(contract)
    failing = _uncoercible(frame, schema, among)
    return failing, _row_hashes(_keys(frame, schema, failing)) if contract.unique_rows else None


def _hash_pass(staged: str, contract: Contract, dropped: np.ndarray, uncoerced: set[str]) -> np.ndarray:
    remaining = _frames(staged, contract)[1].drop(index=dropped)
    return _row_hashes(_keys(remaining, build_schema(contract), uncoerced))


def _rows_at(staged: str, contract: Contract, labels: np.ndarray) -> pd.DataFrame:
    return _frames(staged, contract)[1].loc[labels]


def _validate_pass(staged: str, contract: Contract, dropped: np.ndarray, uncoerced: set[str],
                   firsts: pd.DataFrame, later: set[int], origin: tuple[str, int], out_file: str) -> dict:
    """One pandera pass over a partition's remaining rows, with the pass's global context.

    ``firsts``: first copies (from earlier partitions) of this partition's duplicates; ``later``:
    the labels the global pass calls later copies (checked against pandera's answer).
    ``origin``: the file's name and the partition's first row within it.
    """
    import pandera.errors

    frame, normalised = _frames(staged, contract)
    schema = build_schema(contract)
    remaining = normalised.drop(index=dropped)
    parts = []
    if len(firsts):
        parts.append(firsts.set_axis(range(-1, -len(firsts) - 1, -1)))
    parts.append(remaining)
    force = uncoerced - _uncoercible(remaining, schema, uncoerced) if uncoerced and len(remaining) else set()
    if force:
        parts.append(remaining.iloc[[0]].assign(**dict.fromkeys(force, FORCE_VALUE)).set_axis([FORCE_LABEL]))
    reasons: dict[int, list[str]] = {}
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    try:
        validated = schema.validate(pd.concat(parts) if len(parts) > 1 else remaining, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        row_cases = cases[cases["index"].notna()]
        row_cases = row_cases[row_cases["index"].astype("int64") >= 0]
        frame_cases = cases[cases["index"].isna()]
        record_cases(row_cases, reasons, counts, examples)
        examples.pop(DUPLICATE_CHECK, None)   # ordered differently across partitions: see below
        details = [f"{_check_name(r)} failed with {r['failure_case']!r}" for _, r in frame_cases.head(10).iterrows()]
        flagged = {i for i, names in reasons.items() if DUPLICATE_CHECK in names}
        if flagged != later:
            raise RuntimeError(f"partition of {origin[0]}: pandera's duplicates {sorted(flagged)[:5]} differ from "
                               f"the global pass's {sorted(later)[:5]}") from exc
        labels = sorted(reasons)
        rejected = frame.loc[labels]
        rejected = pd.DataFrame({SOURCE_FILE_COLUMN: origin[0],
                                 SOURCE_ROW_COLUMN: np.asarray(labels, dtype="int64") + origin[1] + 2},
                                index=labels).join(rejected)
        rejected[FAILED_CHECKS_COLUMN] = ["; ".join(reasons[i]) for i in labels]
        left = remaining.drop(index=labels)
        # Other columns coerced on every remaining row of every partition, so they still do.
        return {"clean": False, "rejected": rejected, "counts": dict(counts), "examples": examples,
                "dup_examples": duplicate_examples(row_cases, contract), "frame_details": details,
                "next": _next_keys(left, contract, uncoerced), "left": len(left)}
    validated.reset_index(drop=True).to_parquet(out_file, index=False)
    return {"clean": True, "rows": len(validated), "left": len(validated)}


def _duplicates(client: distributed.Client, staged: list[str], contract: Contract, dropped: list[np.ndarray],
                sizes: list[int], uncoerced: set[str], known: list[tuple]) -> tuple[list, list[set[int]], list]:
    """Per partition: first copies to place in front, the labels of later copies (global order), the hashes.

    ``known``: per partition, the columns failing coercion there and the hashes under them; a
    partition whose set differs from the pass's ``uncoerced`` is hashed again.
    """
    empty = pd.DataFrame(columns=contract.column_names)
    nothing = ([empty] * len(staged), [set() for _ in staged], [None] * len(staged))
    if not contract.unique_rows:
        return nothing
    hashes = client.gather([known_hashes if failing == uncoerced
                            else client.submit(_hash_pass, part, contract, drop, uncoerced, pure=False)
                            for part, drop, (failing, known_hashes) in zip(staged, dropped, known, strict=True)])
    repeated = pd.Series(np.concatenate(hashes)).duplicated(keep=False).to_numpy()
    if not repeated.any():
        return nothing[0], nothing[1], hashes
    labels, start = [], 0
    for size, drop, part_hashes in zip(sizes, dropped, hashes, strict=True):
        kept = np.setdiff1d(np.arange(size), drop)
        labels.append(kept[repeated[start:start + len(part_hashes)]])
        start += len(part_hashes)
    rows = client.gather([client.submit(_rows_at, part, contract, lab, pure=False) if len(lab) else None
                          for part, lab in zip(staged, labels, strict=True)])
    candidates = pd.concat([r.assign(_part=p) for p, r in enumerate(rows) if r is not None])
    keys = _keys(candidates[contract.column_names], build_schema(contract), uncoerced).reset_index(drop=True)
    group = keys.groupby(contract.column_names, dropna=False, sort=False).ngroup().to_numpy()
    later_mask = keys.duplicated(keep="first").to_numpy()
    first_at = pd.Series(np.arange(len(group))).groupby(group).transform("first").to_numpy()
    firsts, later = list(nothing[0]), [set() for _ in staged]
    parts = candidates["_part"].to_numpy()
    for p in range(len(staged)):
        mine = later_mask & (parts == p)
        later[p] = set(candidates.index[mine].tolist())
        sources = np.unique(first_at[mine])
        sources = sources[parts[sources] != p]
        if len(sources):
            firsts[p] = candidates.iloc[sources][contract.column_names]
    logger.info("duplicate pass: %d rows share a hash, %d are later copies", len(candidates), int(later_mask.sum()))
    return firsts, later, hashes


def validate_partitioned(raw: str | Path, contract: Contract, client: distributed.Client, out_dir: Path,
                         blocksize: int | str) -> PartitionedValidationResult:
    """Validate ``raw`` (a CSV or a folder of CSV/CSV.gz) on ``client``'s workers, partition by partition.

    Same contract, same code (pandera schema, :func:`record_cases`), same passes as
    :func:`validate_file`, hence the same quarantine and report. Valid rows go to ``out_dir`` as
    ``part-NNNNN.parquet`` written by the workers (``out_dir`` is replaced; it must be on storage
    the workers share with the client). Partitions are ``blocksize`` bytes of CSV text: byte ranges
    of plain CSVs, pieces of a ``.csv.gz`` cut as one worker streams it. Raises DataValidationError
    as the single path does.
    """
    from dask.utils import parse_bytes

    size = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    out_dir = Path(out_dir).absolute()   # workers write there, whatever their working directory
    blocks = plan_blocks(raw, size)
    schema = build_schema(contract)
    run = uuid.uuid4().hex[:8]
    tmp, staging = (out_dir.with_name(f".{out_dir.name}.{kind}-{run}") for kind in ("tmp", "staged"))
    tmp.mkdir(parents=True)
    staging.mkdir()
    try:
        return _run(client, blocks, str(staging), size, contract, schema, out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _run(client: distributed.Client, planned: list[Block], staging: str, blocksize: int, contract: Contract,
         schema: Any, out_dir: Path, tmp: Path) -> PartitionedValidationResult:
    started = time.perf_counter()
    by_block = client.gather([
        client.submit(_stage, block, contract, f"{staging}/part-{b:05d}.parquet", blocksize, pure=False)
        for b, block in enumerate(planned)])
    blocks = [block for block, parts in zip(planned, by_block, strict=True) for _ in parts]
    meta = [part[1:] for parts in by_block for part in parts]
    staged = [part[0] for parts in by_block for part in parts]
    logger.info("read %d partitions in %.1f s", len(blocks), time.perf_counter() - started)
    sizes = [m[0] for m in meta]
    origins, per_file = [], Counter()
    for block, size in zip(blocks, sizes, strict=True):
        origins.append((Path(block.path).name, per_file[block.path]))
        per_file[block.path] += size
    for path, rows in per_file.items():
        if rows == 0:
            raise DataValidationError(f"raw data file {path} has no rows")
    known = [m[1] for m in meta]
    uncoerced = set().union(*(failing for failing, _ in known))
    dropped = [np.array([], dtype="int64") for _ in blocks]
    rejected: list[list[pd.DataFrame]] = [[] for _ in blocks]
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for number in range(1, MAX_PASSES + 1):
        started = time.perf_counter()
        firsts, later, hashes = _duplicates(client, staged, contract, dropped, sizes, uncoerced, known)
        found = time.perf_counter()
        results = client.gather([
            client.submit(_validate_pass, part, contract, dropped[p], uncoerced, firsts[p], later[p], origins[p],
                          str(tmp / f"part-{p:05d}.parquet"), pure=False)
            for p, part in enumerate(staged)])
        logger.info("pass %d: duplicates %.1f s, checks %.1f s, %d rows rejected", number, found - started,
                    time.perf_counter() - found, sum(len(r.get("rejected", ())) for r in results))
        if all(r["clean"] for r in results):
            break
        if not any(r.get("counts") for r in results):
            details = [d for r in results for d in r.get("frame_details", [])]
            raise DataValidationError(f"the data fails contract {contract.name!r}: "
                                      f"{'; '.join(dict.fromkeys(details).keys())}")
        merge_pass(results, contract, schema, counts, examples)
        for p, r in enumerate(results):
            if not r["clean"] and len(r["rejected"]):   # an empty one would turn str columns to object
                rejected[p].append(r["rejected"])
                dropped[p] = np.concatenate([dropped[p], r["rejected"].index.to_numpy(dtype="int64")])
        # A partition without failures keeps its rows, hence its hashes.
        known = [(uncoerced, hashes[p]) if r["clean"] else r["next"] for p, r in enumerate(results)]
        uncoerced = set().union(*(failing for failing, _ in known))
        if sum(r["left"] for r in results) == 0:   # every row rejected: one empty part, as the single path
            for stale in tmp.glob("*.parquet"):
                stale.unlink()
            pd.DataFrame(columns=contract.column_names).to_parquet(tmp / "part-00000.parquet", index=False)
            break
    else:
        raise DataValidationError(f"validation did not settle after {MAX_PASSES} passes")
    valid_rows = sum(r.get("rows", 0) for r in results)
    frames = [pd.concat(parts).sort_index() for parts in rejected if parts]
    quarantine = pd.concat(frames).reset_index(drop=True) if frames else pd.DataFrame(
        columns=[SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, *contract.column_names, FAILED_CHECKS_COLUMN])
    if out_dir.is_dir() and not out_dir.is_symlink():
        shutil.rmtree(out_dir)
    elif out_dir.exists() or out_dir.is_symlink():
        out_dir.unlink()
    tmp.rename(out_dir)
    logger.info("validated %d partitions: %d rows valid, %d rejected", len(blocks), valid_rows, len(quarantine))
    return PartitionedValidationResult(
        valid=None, rejected=quarantine, rows_in=sum(sizes), failures_by_check=counts,
        examples_by_check=examples, na_values=contract.na_values, valid_rows=valid_rows,
        valid_dir=out_dir, partitions=len(blocks))
