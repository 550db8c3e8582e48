"""The promotion gate: bless a challenger model or not, with TFX Evaluator semantics.

Value thresholds bound a metric of the challenger (``lower <= metric <= upper``). Change
thresholds bound the difference challenger minus champion on the same test set; they are
skipped when there is no champion yet. Baseline thresholds have the change form but compare
with the prior-only model (it predicts the training set's positive share for every row), which
the evaluate stage scores on the same test set; they always apply, so the first model of any
dataset is judged by what it adds over knowing the base rate, not by one dataset's absolute
figures. A change is ``absolute`` (challenger minus reference) and/or ``relative`` (that
difference over the reference's magnitude). A gate with no thresholds at all never blesses:
promotion must be an explicit decision.

With a golden set (:mod:`mlops_template.pipeline.golden`) and a champion, the change thresholds
apply a second time to both models' metrics on the golden set (kind ``golden_change``), and the
``slices`` and ``answer_changes`` sections bound what the candidate may do to one group against
the champion on those same rows (kinds ``slice`` and ``answer_change``, computed by
:mod:`mlops_template.pipeline.comparison`; each failing check names the group).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops_template.core.params import DIRECTIONS, ChangeLimit, GateSection, ValueBound

logger = logging.getLogger(__name__)

__all__ = ["DIRECTIONS", "GateConfigError", "GateDecision", "check_metric_names", "decide", "parse_config"]


class GateConfigError(ValueError):
    """The gate names a metric (or slice metric) the task's models do not produce: a params.yaml mistake."""


@dataclass
class GateDecision:
    """Whether the challenger is blessed, every check made, and the reasons in plain words."""

    blessed: bool
    checks: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    champion: dict | None = None

    def to_dict(self) -> dict:
        """JSON-ready form, for ``metrics/gate.json`` and the registry's run tags."""
        return {
            "blessed": self.blessed,
            "reasons": list(self.reasons),
            "checks": [dict(c) for c in self.checks],
            "champion": dict(self.champion) if self.champion is not None else None,
        }


THRESHOLD_SECTIONS = GateSection.THRESHOLD_SECTIONS


def parse_config(config: GateSection | Mapping[str, Any] | None) -> GateSection:
    """The ``gate`` params section, checked (see :class:`GateSection`); ValueError names the malformed key."""
    return GateSection.parse(config)


def check_metric_names(config: GateSection | Mapping[str, Any] | None, produced: Mapping[str, Any],
                       task: str) -> None:
    """Refuse thresholds on metrics a ``task`` model does not have (GateConfigError naming each).

    ``produced`` is the candidate's metrics. Without this, a gate carried over from another task
    (``roc_auc`` for a regression) would refuse every model with "missing" and never say the key is wrong.
    """
    parsed = parse_config(config)
    known = sorted(k for k, v in produced.items() if v is None or (isinstance(v, (int, float))
                                                                  and not isinstance(v, bool)))
    problems = [f"gate.{section}.{metric} names {metric!r}, which a {task} model does not have; its metrics: "
                f"{', '.join(known)}" for section in THRESHOLD_SECTIONS for metric in getattr(parsed, section)
                if metric not in produced]
    if problems:
        raise GateConfigError("; ".join(problems))


def _observed(metrics: dict, metric: str, whose: str) -> tuple[float | None, str | None]:
    """The metric's value, or None and the reason it cannot be used."""
    if metric not in metrics:
        return None, f"{metric} is missing from the {whose} metrics"
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{metric} of the {whose} is not a finite number ({value!r})"
    return float(value), None


def _value_check(metric: str, limits: ValueBound, challenger: dict) -> dict:
    bound = limits.limits()
    observed, problem = _observed(challenger, metric, "challenger")
    check = {"kind": "value", "metric": metric, "key": f"gate.value_thresholds.{metric}",
             "threshold": bound, "observed": observed, "skipped": False}
    if problem:
        return {**check, "passed": False, "reason": problem}
    lower = -math.inf if limits.lower is None else limits.lower
    upper = math.inf if limits.upper is None else limits.upper
    passed = lower <= observed <= upper
    if passed:
        reason = f"{metric} = {observed:.6g} is within {_describe_bound(bound)}"
    else:
        reason = f"{metric} = {observed:.6g} is outside {_describe_bound(bound)}"
    return {**check, "passed": passed, "reason": reason}


def _describe_bound(bound: dict[str, float]) -> str:
    parts = []
    if "lower" in bound:
        parts.append(f">= {bound['lower']:g}")
    if "upper" in bound:
        parts.append(f"<= {bound['upper']:g}")
    return "the bound " + " and ".join(parts)


def _change_check(metric: str, limit: ChangeLimit, challenger: dict, reference: dict | None,
                  kind: str = "change") -> dict:
    """Challenger minus ``reference`` (the champion, or the baseline for kind ``baseline``)."""
    spec = limit.limits()
    whose = "champion" if kind == "change" else "baseline"
    check = {"kind": kind, "metric": metric, "key": f"gate.{kind}_thresholds.{metric}",
             "threshold": spec, "observed": None, "skipped": False}
    if reference is None:
        return {**check, "passed": None, "skipped": True, "reason": f"no {whose} to compare with"}
    new, problem = _observed(challenger, metric, "challenger")
    old, old_problem = _observed(reference, metric, whose)
    if problem or old_problem:
        return {**check, "passed": False, "reason": problem or old_problem}
    delta = round(new - old, 9)  # metrics carry 6 decimals; drop float noise so limits are exact
    changes = {"absolute": delta}
    if limit.relative is not None:
        changes["relative"] = round(delta / abs(old), 9) if old else (math.inf if delta else 0.0)
    higher = limit.direction == "higher_is_better"
    relation = ">=" if higher else "<="
    verdicts = []
    passed = True
    for mode, change in changes.items():
        bound = getattr(limit, mode)
        if bound is None:
            continue
        ok = change >= bound if higher else change <= bound
        passed = passed and ok
        shown = f"{change:+.6g}" if mode == "absolute" else f"{change:+.2%}"
        wanted = f"{bound:+g}" if mode == "absolute" else f"{bound:+.0%}"
        verdicts.append(f"{mode} change {shown} {'meets' if ok else 'fails'} the limit {relation} {wanted}")
    reason = f"{metric} {old:.6g} ({whose}) -> {new:.6g}: {'; '.join(verdicts)} ({limit.direction})"
    values = {"observed": delta, "challenger": new, whose: old}
    if "relative" in changes:
        values["relative"] = changes["relative"]
    return {**check, **values, "passed": passed, "reason": reason}


def _golden_checks(parsed: GateSection, golden: dict | None) -> list[dict]:
    """Change thresholds on the golden set, then the slice and answer-change checks already made."""
    if golden is None:
        return []
    checks = []
    for metric, spec in parsed.change_thresholds.items():
        check = _change_check(metric, spec, golden["challenger"], golden.get("champion"))
        checks.append({**check, "kind": "golden_change", "key": f"{check['key']} (golden set)"})
    return checks + [dict(c) for c in golden.get("checks", [])]


def decide(challenger: dict, champion: dict | None, config: GateSection | Mapping[str, Any] | None,
           baseline: dict | None = None,
           golden: dict | None = None) -> GateDecision:
    """Judge the challenger's metrics against the gate config (the ``gate`` section of params).

    ``champion`` and ``baseline`` are metrics of the current champion and of the prior-only
    model on the same test set (None when there is none). ``golden`` holds both models' metrics
    on the golden set (``challenger``, ``champion``) and the slice and answer-change ``checks``
    (None without a golden set). Blessed when at least one threshold is configured and every
    check that applies passes. Raises ValueError when the config is malformed, so a typo never
    silently blesses a model.
    """
    parsed = parse_config(config)
    if not parsed.has_thresholds:
        decision = GateDecision(False, [], ["not blessed: no thresholds configured (gate.*_thresholds)"],
                                champion)
        logger.warning("gate: %s", decision.reasons[0])
        return decision
    checks = [_value_check(m, b, challenger) for m, b in parsed.value_thresholds.items()]
    checks += [_change_check(m, s, challenger, baseline, "baseline")
               for m, s in parsed.baseline_thresholds.items()]
    checks += [_change_check(m, s, challenger, champion) for m, s in parsed.change_thresholds.items()]
    checks += _golden_checks(parsed, golden)
    failed = [c for c in checks if c["passed"] is False]
    applied = [c for c in checks if c["passed"] is not None]
    skipped = len(checks) - len(applied)
    if failed:
        reasons = [f"{c['kind']} check failed: {c['reason']} [{c['key']}]" for c in failed]
    elif not applied:
        reasons = ["not blessed: no check applied (" + "; ".join(c["reason"] for c in checks) + ")"]
    else:
        note = f"; {skipped} check(s) skipped: {', '.join(c['reason'] for c in checks if c['skipped'])}" \
            if skipped else ""
        reasons = [f"blessed: all {len(applied)} applicable check(s) passed{note}"]
    decision = GateDecision(bool(applied) and not failed, checks, reasons, champion)
    logger.info("gate: blessed=%s; %s", decision.blessed, " | ".join(reasons))
    return decision
