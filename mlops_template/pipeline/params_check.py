"""Params that fit the contract, or a stop before any stage does work.

The shape of every key (numbers, names, the value matrix, the gate) is checked when params.yaml
is read (:mod:`mlops_template.core.params`). What needs the contract is checked here: keys that
name columns (``featurize.drop``, ``featurize.derived``, ``evaluate.slices``) and the raw-data
folder. Each stage calls :func:`contract_or_exit` first with the keys it reads; validate, the
first stage, declares and checks all of them, so a mismatch stops ``dvc repro`` at once with
the key, what is wrong and what to set, instead of a stack trace later or an empty deployment.
:func:`checked_contract` checks a whole params file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.contract import Contract, ContractError, load_contract
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.expressions import ExpressionError, parse_expression
from mlops_template.core.features import FeatureError, expression_names
from mlops_template.core.params import (
    SECTIONS,
    DataSection,
    EvaluateSection,
    FeaturizeSection,
    Params,
    ParamsError,
    load,
    parse_sections,
)

logger = logging.getLogger(__name__)

__all__ = ["ParamsError", "checked_contract", "contract_or_exit", "fit_problems", "params_or_exit", "problems_with"]


def _columns_problem(key: str, names: list[str], inputs: list[str], target: str, fix: str) -> str | None:
    unknown = [n for n in names if n not in inputs]
    if not unknown:
        return None
    what = "is the target" if unknown == [target] else "are not input columns of the contract"
    return f"{key} names {unknown}, which {what}; {fix} (input columns: {inputs})"


def _derived_problem(key: str, name: str, expression: str, contract: Contract) -> str | None:
    """Everything wrong with one derived feature, in one line, or None.

    The expression must stay inside the language of :mod:`mlops_template.core.expressions`
    (the offending parts are named) and read only numeric input columns of the contract; its
    name and type were checked when params.yaml was read (:class:`FeaturizeSection`).
    """
    if name in contract.column_names:
        return f"{key} reuses the contract column name {name!r}: rename the derived column"
    try:
        used = expression_names(expression)
    except FeatureError as exc:
        return f"{key}: {exc}"
    inputs = [c.name for c in contract.input_columns]
    found = [_columns_problem(key, used, inputs, contract.target,
                              "fix the expression or remove it from featurize.derived")]
    text = [c.name for c in contract.input_columns if c.type == "str" and c.name in used]
    if text:
        found.append(f"{key} reads the text columns {text}; derived features take numeric columns only")
    try:
        parse_expression(expression)
    except ExpressionError as exc:
        found.append(f"{key}: {exc}")
    return "; ".join(p for p in found if p) or None


def fit_problems(contract: Contract, raw: str | None = None, drop: Sequence[str] | None = None,
                 derived: Mapping[str, str] | None = None, slices: Sequence[str] | None = None) -> list[str]:
    """Every way the given keys do not fit ``contract`` (their shape was checked when params.yaml was read).

    ``raw`` is ``data.raw``, ``drop`` and ``derived`` are ``featurize.drop`` and ``featurize.derived``
    (both or neither), ``slices`` is ``evaluate.slices``; a key not given is not checked.
    """
    inputs = [c.name for c in contract.input_columns]
    problems: list[str | None] = []
    if raw is not None and not Path(raw).is_dir():
        found = "a file" if Path(raw).is_file() else "missing"
        problems.append(f"data.raw must be a folder of CSV batches, and {raw} is {found}: set "
                        f"data.raw: data/raw and put the CSV in that folder")
    if drop is not None:
        problems.append(_columns_problem("featurize.drop", list(drop), inputs, contract.target,
                                         "remove them from featurize.drop or set it to []"))
    for name, expression in (derived or {}).items():
        problems.append(_derived_problem(f"featurize.derived.{name}", name, expression, contract))
    if drop is not None and derived is not None:
        kept = [c for c in contract.columns_with_role("numeric") + contract.columns_with_role("categorical")
                if c not in drop]
        if not kept and not derived:
            problems.append("no feature columns are left: the contract has no numeric or categorical "
                            "column outside featurize.drop; set roles in the contract or shorten drop")
    if slices is not None:
        problems.append(_columns_problem("evaluate.slices", list(slices), inputs, contract.target,
                                         "remove them from evaluate.slices or set it to []"))
    return [p for p in problems if p]


def problems_with(params: Params | Mapping[str, Any], contract: Contract) -> list[str]:
    """Every way ``params`` (all of it, typed or as read from YAML) is malformed or does not fit ``contract``.

    A section that is malformed is reported as such and not checked against the contract.
    """
    if isinstance(params, Params):
        sections, problems = {name: params.section(name) for name in SECTIONS}, []
    else:
        sections, problems = parse_sections(params)
    data, featurize, evaluate = sections.get("data"), sections.get("featurize"), sections.get("evaluate")
    return problems + fit_problems(
        contract, raw=data.raw if isinstance(data, DataSection) else None,
        drop=featurize.drop if isinstance(featurize, FeaturizeSection) else None,
        derived=featurize.derived if isinstance(featurize, FeaturizeSection) else None,
        slices=evaluate.slices if isinstance(evaluate, EvaluateSection) else None)


def _load(path: str) -> Contract:
    try:
        return load_contract(path)
    except (OSError, ContractError) as exc:
        raise ParamsError([f"data.contract {path!r} cannot be used: {exc}"]) from exc


def checked_contract(params: Params | Mapping[str, Any]) -> Contract:
    """The contract of ``params``, after checking all of ``params`` against it; ParamsError if not."""
    path = params.data.contract if isinstance(params, Params) else (params.get("data") or {}).get("contract")
    contract = _load(str(path))
    problems = problems_with(params, contract)
    if problems:
        raise ParamsError(problems)
    return contract


def params_or_exit(path: str | Path = paths.PARAMS) -> Params:
    """params.yaml read once for a stage script: every malformed key logged, then exit code 65 (BAD_INPUT)."""
    try:
        return load(path)
    except ParamsError as exc:
        logger.error("%s is malformed; nothing was done:\n%s", path, "\n".join(f"  - {p}" for p in exc.problems))
        raise SystemExit(ExitCode.BAD_INPUT) from exc


def contract_or_exit(contract_path: str, **keys: Any) -> Contract:
    """The contract at ``contract_path``, for a stage: the keys it passes are checked against it.

    ``keys`` are those of :func:`fit_problems`, among the ones the stage declares in dvc.yaml (the
    validate stage, first to run, checks every key that names columns, so a mismatch stops the
    pipeline there); every problem is logged and the stage stops with exit code 65 (BAD_INPUT)
    before doing any work.
    """
    try:
        contract = _load(contract_path)
        problems = fit_problems(contract, **keys)
        if problems:
            raise ParamsError(problems)
        return contract
    except ParamsError as exc:
        logger.error("params.yaml does not fit the data contract %s; nothing was done:\n%s",
                     contract_path, "\n".join(f"  - {p}" for p in exc.problems))
        raise SystemExit(ExitCode.BAD_INPUT) from exc
