"""Run every guard check on one batch: the marginal ones, then the joint and cumulative ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.ops.guard.accepted import Accepted
from mlops_template.ops.guard.expected import label_given_inputs
from mlops_template.ops.guard.joint import (
    JointSettings,
    input_columns,
    label_by_group,
    trigger,
    twin_check,
    twin_share,
)
from mlops_template.ops.guard.marginal import (
    drift_scores,
    duplicate_mask,
    invalid_share,
    row_keys,
)
from mlops_template.ops.guard.report import BatchReport, Check, bound, near_limit_warnings
from mlops_template.ops.guard.target import label_shift, target_view
from mlops_template.pipeline.validation import DataValidationError, validate_frame


def _drift_check(name: str, reference: pd.DataFrame, current: pd.DataFrame, contract: Contract,
                 thresholds: dict[str, Any]) -> Check:
    scores = drift_scores(reference, current, contract, thresholds["max_psi"], thresholds["max_tvd"])
    drifted = sorted(n for n, s in scores.items() if s["drifted"])
    limit = int(thresholds["max_drifted_columns"])
    return Check(name, float(len(drifted)), limit, len(drifted) <= limit,
                 f"{len(drifted)} drifted column(s) {drifted}, at most {limit} allowed", {"columns": scores})


def marginal_checks(raw: pd.DataFrame, valid: pd.DataFrame, rejected: pd.DataFrame, accepted: Accepted,
                    contract: Contract, thresholds: dict[str, Any]) -> list[Check]:
    """invalid, duplicates, label_shift and drift: one column (or the label) at a time."""
    rows = len(raw)
    checks = [bound("invalid", invalid_share(rejected, rows), thresholds["max_invalid_share"],
                    "share of rows failing the contract")]
    duplicates = duplicate_mask(row_keys(raw, contract), accepted.keys)
    checks.append(bound("duplicates", float(duplicates.mean()), thresholds["max_duplicate_share"],
                        "share of duplicate rows (within the batch or already accepted)",
                        {"rows": int(duplicates.sum())}))
    checks.append(label_shift(raw[contract.target], accepted.frame[contract.target], contract, thresholds))
    if not valid.empty:
        checks.append(_drift_check("drift", accepted.frame, valid, contract, thresholds))
    return checks


def joint_checks(valid: pd.DataFrame, accepted: Accepted, contract: Contract, thresholds: dict[str, Any],
                 model_columns: Sequence[str] | None = None) -> list[Check]:
    """label_by_group, trigger, label_flips, near_duplicates, and the cumulative checks
    (``cumulative_label_by_group``, ``cumulative_label_given_inputs``, ``cumulative_trigger``,
    ``cumulative_drift``: everything accepted since the reference window plus the batch, against it).

    ``model_columns`` are the contract columns the model reads (default: every numeric and
    categorical one); rows equal in those are near-duplicates to the model.
    """
    s = JointSettings.from_thresholds(thresholds)
    view = target_view(contract, accepted.frame[contract.target])
    reference = accepted.frame
    checks = [label_by_group("label_by_group", valid, reference, contract, view, s),
              trigger("trigger", valid, reference, contract, view, s)]
    model = list(model_columns) if model_columns is not None else input_columns(contract)
    keys = {"model": (model, row_keys(valid, contract, model).to_numpy()),
            "model+label": ([*model, contract.target], row_keys(valid, contract, [*model, contract.target]).to_numpy()),
            "full": (contract.column_names, row_keys(valid, contract).to_numpy())}
    ref = {name: accepted.keys_by(columns, contract) for name, (columns, _) in keys.items()}
    for name, full, what, excess in (
            ("label_flips", "model+label", "equal to another row in every column the model uses but the label",
             s.max_label_flip_excess),
            ("near_duplicates", "full", "equal to another row in every column the model uses, not in all",
             s.max_near_duplicate_excess)):
        twins = twin_share((ref["model"], ref[full]), (keys["model"][1], keys[full][1]), s.seed)
        checks.append(twin_check(name, what, twins, s.alpha, excess))
    since = accepted.since_window
    window = accepted.window_frame
    if since.empty:
        skipped = "no rows accepted since the reference window: the per-batch checks cover it"
        return checks + [Check(n, None, 0.0, True, skipped) for n in
                         ("cumulative_label_by_group", "cumulative_label_given_inputs", "cumulative_trigger",
                          "cumulative_drift")]
    pooled = pd.concat([since, valid], ignore_index=True)
    extent = {"window": len(window), "since_window": len(pooled)}
    for check in (label_by_group("cumulative_label_by_group", pooled, window, contract, view, s),
                  label_given_inputs("cumulative_label_given_inputs", pooled, window, contract, view, s),
                  trigger("cumulative_trigger", pooled, window, contract, view, s),
                  _drift_check("cumulative_drift", window, pooled, contract, thresholds)):
        check.details.update(extent)
        checks.append(check)
    return checks


def check_batch(name: str, raw: pd.DataFrame, accepted: Accepted, contract: Contract,
                thresholds: dict[str, Any], model_columns: Sequence[str] | None = None
                ) -> tuple[BatchReport, pd.DataFrame]:
    """Run every guard check on a batch read as raw strings; return the report and valid rows.

    The report lists failed checks under ``reasons`` and passed ones close to their limit
    under ``warnings`` (:func:`near_limit_warnings`).
    """
    rows = len(raw)
    min_rows = int(thresholds["min_rows"])
    checks = [Check("rows", float(rows), min_rows, rows >= min_rows,
                    f"{rows} rows, at least {min_rows} needed to judge a batch")]
    try:
        result = validate_frame(raw, contract)
    except DataValidationError as exc:
        checks.append(Check("invalid", 1.0, thresholds["max_invalid_share"], False, str(exc)))
        return BatchReport(name, rows, checks), raw.iloc[0:0]
    valid = result.valid
    checks += marginal_checks(raw, valid, result.rejected, accepted, contract, thresholds)
    checks[1].details["failures_by_check"] = result.failures_by_check
    if not valid.empty:
        checks += joint_checks(valid, accepted, contract, thresholds, model_columns)
    return BatchReport(name, rows, checks, near_limit_warnings(checks, thresholds)), valid
