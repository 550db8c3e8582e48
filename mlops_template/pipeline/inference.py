"""Contract inference: draft a contract that accepts its source CSV and the next batch like it.

Offline only (the service never drafts contracts). ``mlops-template contract infer``
drafts one for review; :mod:`mlops_template.pipeline.onboarding` drafts one and points
params.yaml at it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops_template.core.contract import TASKS, ContractError, load_contract
from mlops_template.pipeline.target_inference import BOUND_MODES, infer_target, numeric_bounds, plain_number

NA_MARKERS = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "#N/A", "-")
IDENTIFIER_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key)$|^(id|uuid|guid)([_\W]|$)", re.IGNORECASE)
INTEGRAL_FLOAT = re.compile(r"^\s*[+-]?\d+\.0*\s*$")
MIN_ROWS_FOR_IDENTIFIER = 20
IDENTIFIER_DISTINCT_SHARE = 0.9
DATE_PARSED_SHARE = 0.95


@dataclass
class Draft:
    """A drafted contract and the notes a person should read before trusting it."""

    contract: dict[str, Any]
    notes: dict[str, str]  # column -> what was decided and why
    warnings: list[str]
    task: str = "binary"  # what the model predicts (mlops_template.core.tasks)
    choice: str = ""  # the task chosen and why, in one line (what the CLI prints first)

    def review(self) -> str:
        """The review printed by the CLI: one line per column, then the warnings."""
        width = max(len(name) for name in self.notes)
        lines = [f"  {name:<{width}}  {note}" for name, note in self.notes.items()]
        if self.warnings:
            lines += ["", "Review these:"] + [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)


def read_csv_for_inference(path: str | Path) -> pd.DataFrame:
    """Every cell of a CSV as stripped text, nothing read as missing yet (inference decides)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    return frame.apply(lambda s: s.str.strip())


def _na_markers(frame: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """The NA markers a drafted contract should read as missing, and how often each occurs.

    Empty cells are always missing. Another marker counts only where it occurs in a column whose
    other values are all numbers ("NA" among numbers is a marker; "NA" among country codes may be
    North America), or it is a marker no value would spell ("?", "#N/A", "null", "NaN", "None").
    """
    unambiguous = {"?", "#N/A", "null", "NULL", "NaN", "nan", "None", "N/A", "n/a"}
    counts: dict[str, int] = {}
    for name in frame.columns:
        series = frame[name]
        present = series[series.isin(NA_MARKERS)]
        if present.empty:
            continue
        rest = series[~series.isin(NA_MARKERS)]
        numeric_rest = rest.empty or pd.to_numeric(rest, errors="coerce").notna().all()
        for marker, count in present.value_counts().items():
            if marker == "" or marker in unambiguous or numeric_rest:
                counts[marker] = counts.get(marker, 0) + int(count)
    markers = [""] + sorted(m for m in counts if m != "")
    return markers, counts


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.head(200)
    if sample.str.fullmatch(r"[+-]?\d+(\.\d*)?").all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= DATE_PARSED_SHARE)


def infer_contract(
    frame: pd.DataFrame,
    target: str,
    positive: str | None = None,
    max_categories: int = 50,
    bounds: str = "none",
    open_categories: bool = False,
    task: str | None = None,
) -> Draft:
    """Draft a contract that accepts the data it was drafted from and the next batch like it.

    ``frame`` holds raw text (see :func:`read_csv_for_inference`). Empty cells and the usual NA
    markers are missing values; columns with missing values are nullable. Columns whose values
    all parse as numbers are numeric (``int`` when every value is integral, ``129.0`` included,
    which validation accepts as written). Numeric bounds are left open by default, so next
    month's data is not rejected by construction (``bounds="widened"`` sets the observed range
    widened by half its span). Text with at most ``max_categories`` values is a closed category
    list (``open_categories`` leaves it open); more values make an open vocabulary, which the
    model encodes with rare and unseen values together. Identifier-like columns (nearly every
    value distinct) and dates are drafted as ``role: ignore``. Every decision is in the notes.

    The task follows from the target's values unless ``task`` names it: two values are binary
    (``positive`` as given, else the minority class); numbers that are not all whole, or more than
    ``max_categories`` whole numbers, are a regression; 3 to ``max_categories`` text values or whole
    numbers are multiclass classes. A target that cannot be the task asked for (or has more text
    values than ``max_categories``) is a ContractError that says why.
    """
    if target not in frame.columns:
        raise ContractError(f"target column {target!r} not in {list(frame.columns)}")
    if bounds not in BOUND_MODES:
        raise ContractError(f"bounds must be one of {BOUND_MODES}, got {bounds!r}")
    markers, marker_counts = _na_markers(frame)
    frame = frame.mask(frame.isin(markers))
    chosen = infer_target(frame[target], target, positive, task, max_categories, bounds)
    columns: dict[str, Any] = {}
    notes: dict[str, str] = {}
    warnings: list[str] = list(chosen.warnings)
    rows = len(frame)
    for name in frame.columns:
        series = frame[name]
        known = series.dropna().astype(str)
        missing = int(series.isna().sum())
        if name == target:
            columns[name], notes[name] = chosen.spec, chosen.note
            continue
        if known.empty:
            columns[name] = {"type": "str", "role": "ignore", "nullable": True}
            notes[name] = "ignore: every cell is empty"
            warnings.append(f"{name}: every cell is empty, drafted as role ignore")
            continue
        numbers = pd.to_numeric(known, errors="coerce")
        distinct = known.nunique()
        identifier_like = (len(known) >= MIN_ROWS_FOR_IDENTIFIER
                           and distinct >= IDENTIFIER_DISTINCT_SHARE * len(known))
        if numbers.notna().all():
            integral = bool((numbers % 1 == 0).all()) and bool((numbers.abs() < 2**53).all())
            spec = {"type": "int" if integral else "float", "role": "numeric", **numeric_bounds(numbers, bounds)}
            observed = f"observed {plain_number(numbers.min())} to {plain_number(numbers.max())}"
            spec["description"] = f"{observed}; review the bounds"
            ordered = numbers.is_monotonic_increasing or numbers.is_monotonic_decreasing
            if integral and distinct == len(known) and identifier_like and (
                    IDENTIFIER_NAME.search(name) or ordered):
                spec = {"type": "int", "role": "ignore"}
                notes[name] = f"ignore: identifier-like ({distinct} distinct integers in {len(known)} rows)"
                warnings.append(f"{name}: looks like an identifier, drafted as role ignore; set role: "
                                "numeric if it really is a measurement")
            else:
                written = "integral values, some written as floats" if integral and known.str.contains(
                    r"\.").any() else ("integers" if integral else "decimals")
                bound_note = (f"bounds {spec.get('min')}..{spec.get('max')} (widened)" if "min" in spec
                              else "no bounds")
                notes[name] = f"{spec['type']} numeric ({written}), {observed}, {bound_note}"
        elif identifier_like:
            spec = {"type": "str", "role": "ignore"}
            notes[name] = f"ignore: identifier-like ({distinct} distinct values in {len(known)} rows)"
            warnings.append(f"{name}: nearly every value is distinct (an identifier or free text), "
                            "drafted as role ignore")
        elif _looks_like_dates(known):
            spec = {"type": "str", "role": "ignore"}
            notes[name] = f"ignore: dates ({distinct} distinct), not a model feature as they are"
            warnings.append(f"{name}: holds dates, drafted as role ignore; a date is not a feature "
                            "as it is: add numeric columns derived from it to the CSV if it matters")
        elif distinct <= max_categories and not open_categories:
            spec = {"type": "str", "role": "categorical", "allowed": sorted(known.unique())}
            notes[name] = f"categorical, closed list of {distinct} values: a new value is rejected"
        else:
            spec = {"type": "str", "role": "categorical"}
            notes[name] = (f"categorical, open vocabulary ({distinct} distinct values): any text "
                           "accepted, rare and unseen values share one code")
            if distinct > max_categories:
                warnings.append(f"{name}: {distinct} distinct values (more than {max_categories}), "
                                "drafted as an open vocabulary; set role: ignore if it is free text")
        if missing:
            spec["nullable"] = True
            notes[name] += f"; nullable ({missing} of {rows} missing)"
        columns[name] = spec
    if marker_counts:
        found = ", ".join(f"{m!r} x{c}" for m, c in sorted(marker_counts.items()))
        warnings.append(f"read as missing: {found}")
    duplicates = int(frame.duplicated().sum())
    if duplicates:
        warnings.append(f"{duplicates} rows repeat an earlier row exactly; set unique_rows: true "
                        "to reject them")
    drafted = {
        "name": "model",
        "read": {"na_values": markers, "strip_whitespace": True},
        "unique_rows": False,
        "target": chosen.block,
        "columns": columns,
    }
    return Draft(drafted, notes, warnings, chosen.task, chosen.choice)


def write_contract(draft: dict[str, Any], path: str | Path, source: str) -> None:
    """Write a drafted contract as YAML with a header saying where it came from."""
    header = (f"# Data contract drafted from {source} by `mlops-template contract`.\n"
              "# Review every column: types, nullable, bounds (min/max), allowed values, roles.\n")
    text = header + yaml.safe_dump(draft, sort_keys=False, width=100, allow_unicode=True,
                                   default_flow_style=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``mlops-template contract``: ``infer`` drafts a contract, ``check`` checks one.

    ``mlops-template onboard`` drafts one and points params.yaml at it in one step.
    """
    sub = parser.add_subparsers(dest="command", required=True)
    infer = sub.add_parser("infer", help="draft a contract from a CSV file (params.yaml untouched)")
    add_inference_arguments(infer)
    infer.add_argument("--output", "-o", help="write here instead of standard output")
    check = sub.add_parser("check", help="check that a contract file is well formed")
    check.add_argument("contract")


def handle(args: argparse.Namespace) -> int:
    """Draft a contract from a CSV (``infer``) or check a contract file (``check``)."""
    if args.command == "check":
        contract = load_contract(args.contract)
        print(f"{args.contract}: {len(contract.columns)} columns, target {contract.target!r}")
        return 0
    draft = infer_contract(read_csv_for_inference(args.csv), target=args.target, positive=args.positive,
                           max_categories=args.max_categories, bounds=args.bounds,
                           open_categories=args.open_categories, task=args.task)
    if args.name:
        draft.contract["name"] = args.name
    if args.output:
        write_contract(draft.contract, args.output, args.csv)
        print(f"drafted {args.output} from {args.csv}; {draft.choice}:\n{draft.review()}")
    else:
        print(f"# {draft.choice}")  # a YAML comment: the output stays a contract
        print(yaml.safe_dump(draft.contract, sort_keys=False, width=100, default_flow_style=None), end="")
    return 0


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of contract inference, shared by ``mlops-template contract infer`` and ``onboard``."""
    parser.add_argument("csv")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="what to predict (default: from the target's values: two values binary, 3 to "
                             "--max-categories classes multiclass, other numbers regression)")
    parser.add_argument("--positive", default=None,
                        help="binary: the target value that counts as positive (default: the minority class)")
    parser.add_argument("--name", default=None, help="contract/model name (default: from the file name)")
    parser.add_argument("--bounds", choices=BOUND_MODES, default="none",
                        help="numeric bounds: none (default) or the observed range widened by half its span")
    parser.add_argument("--open-categories", action="store_true",
                        help="accept any text in categorical columns (no allowed lists)")
    parser.add_argument("--max-categories", type=int, default=50,
                        help="more distinct text values than this make an open vocabulary")
