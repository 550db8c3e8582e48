"""Params that fit the contract, or a stop before any stage does work.

Every stage calls :func:`checked_contract` first. Keys that name columns (``featurize.drop``,
``featurize.derived``, ``evaluate.slices``) are checked against the contract, and the keys every
dataset must set (the raw-data folder, the value matrix, the gate, the model and service
names) are checked for shape, so a mismatch stops the pipeline at once with the key, what is
wrong and what to set, instead of a stack trace three stages later or an empty deployment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mlops_template.core.contract import Contract, ContractError, load_contract
from mlops_template.core.expressions import ExpressionError, parse_expression
from mlops_template.core.features import FeatureError, expression_names

logger = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
VALUE_KEYS = ("tp", "fp", "tn", "fn")


class ParamsError(ValueError):
    """params.yaml does not fit the contract or lacks a setting; ``problems`` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _columns_problem(key: str, names: list[str], inputs: list[str], target: str, fix: str) -> str | None:
    unknown = [n for n in names if n not in inputs]
    if not unknown:
        return None
    what = "is the target" if unknown == [target] else "are not input columns of the contract"
    return f"{key} names {unknown}, which {what}; {fix} (input columns: {inputs})"


def _derived_problem(key: str, name: Any, expression: Any, contract: Contract) -> str | None:
    """Everything wrong with one derived feature, in one line, or None.

    The expression must stay inside the language of :mod:`mlops_template.core.expressions`
    (the offending parts are named) and read only numeric input columns of the contract.
    """
    if name in contract.column_names:
        return f"{key} reuses the contract column name {name!r}: rename the derived column"
    if not isinstance(name, str) or name.startswith("_"):
        return f"{key}: a derived column name must be text not starting with '_'"
    if not isinstance(expression, str):
        return f"{key} must be an expression (a string), got {expression!r}"
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


def problems_with(params: dict[str, Any], contract: Contract) -> list[str]:
    """Every way ``params`` does not fit ``contract``; empty when it does."""
    problems: list[str] = []
    inputs = [c.name for c in contract.input_columns]
    raw = Path(params["data"]["raw"])
    if not raw.is_dir():
        found = "a file" if raw.is_file() else "missing"
        problems.append(f"data.raw must be a folder of CSV batches, and {raw} is {found}: set "
                        f"data.raw: data/raw and put the CSV in that folder")

    featurize = params.get("featurize") or {}
    drop = featurize.get("drop") or []
    if not isinstance(drop, list):
        problems.append(f"featurize.drop must be a list of column names, got {drop!r}")
    else:
        problems.append(_columns_problem("featurize.drop", drop, inputs, contract.target,
                                         "remove them from featurize.drop or set it to []"))
    derived = featurize.get("derived") or {}
    if not isinstance(derived, dict):
        problems.append(f"featurize.derived must map new column names to expressions, got {derived!r}")
        derived = {}
    for name, expression in derived.items():
        problems.append(_derived_problem(f"featurize.derived.{name}", name, expression, contract))
    if isinstance(drop, list):
        kept = [c for c in contract.columns_with_role("numeric") + contract.columns_with_role("categorical")
                if c not in drop]
        if not kept and not derived:
            problems.append("no feature columns are left: the contract has no numeric or categorical "
                            "column outside featurize.drop; set roles in the contract or shorten drop")

    evaluate = params.get("evaluate") or {}
    slices = evaluate.get("slices") or []
    if not isinstance(slices, list):
        problems.append(f"evaluate.slices must be a list of column names, got {slices!r}")
    else:
        problems.append(_columns_problem("evaluate.slices", slices, inputs, contract.target,
                                         "remove them from evaluate.slices or set it to []"))
    matrix = evaluate.get("value_matrix")
    if not isinstance(matrix, dict) or any(
            not isinstance(matrix.get(k), (int, float)) or isinstance(matrix.get(k), bool) for k in VALUE_KEYS):
        problems.append(f"evaluate.value_matrix must give a number for each of {list(VALUE_KEYS)} "
                        f"(the value of a true/false positive/negative), got {matrix!r}")

    from mlops_template.pipeline.gate import parse_config

    try:
        parse_config(params.get("gate"))
    except ValueError as exc:
        problems.append(f"gate: {exc}")

    deploy = params.get("deploy") or {}
    if not MODEL_NAME.match(str(deploy.get("model_name", ""))):
        problems.append(f"deploy.model_name {deploy.get('model_name')!r} must be lowercase letters, digits, "
                        "'-', '_' or '.' (MLflow and BentoML name the model after it)")
    if not SERVICE_NAME.match(str(deploy.get("service_name", ""))):
        problems.append(f"deploy.service_name {deploy.get('service_name')!r} must be lowercase letters, "
                        "digits and '_', starting with a letter (the bento is named after it)")
    return [p for p in problems if p]


def checked_contract(params: dict[str, Any]) -> Contract:
    """The contract of ``params``, after checking that the params fit it; ParamsError if not."""
    path = params["data"]["contract"]
    try:
        contract = load_contract(path)
    except (OSError, ContractError) as exc:
        raise ParamsError([f"data.contract {path!r} cannot be used: {exc}"]) from exc
    problems = problems_with(params, contract)
    if problems:
        raise ParamsError(problems)
    return contract


def contract_or_exit(params: dict[str, Any]) -> Contract:
    """:func:`checked_contract` for stage scripts: log every problem and stop with exit code 2."""
    try:
        return checked_contract(params)
    except ParamsError as exc:
        logger.error("params.yaml does not fit the data contract %s; nothing was done:\n%s",
                     params["data"]["contract"], "\n".join(f"  - {p}" for p in exc.problems))
        raise SystemExit(2) from exc
