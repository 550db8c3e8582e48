"""The promotion gate: bless a challenger model or not, with TFX Evaluator semantics.

Value thresholds bound a metric of the challenger (``lower <= metric <= upper``). Change
thresholds bound the difference challenger minus champion on the same test set; they are
skipped when there is no champion yet, so the first model is judged on value thresholds alone.
A gate with no thresholds at all never blesses: promotion must be an explicit decision.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DIRECTIONS = ("higher_is_better", "lower_is_better")


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


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _parse_value_thresholds(raw: Any) -> dict[str, dict[str, float]]:
    parsed = {}
    for metric, spec in _mapping(raw, "gate.value_thresholds").items():
        where = f"gate.value_thresholds.{metric}"
        spec = _mapping(spec, where)
        unknown = set(spec) - {"lower", "upper"}
        if unknown or not spec:
            raise ValueError(f"{where} needs 'lower' and/or 'upper' and nothing else, got {spec!r}")
        bound = {k: _number(v, f"{where}.{k}") for k, v in spec.items()}
        if "lower" in bound and "upper" in bound and bound["lower"] > bound["upper"]:
            raise ValueError(f"{where}: lower {bound['lower']} is above upper {bound['upper']}")
        parsed[metric] = bound
    return parsed


def _parse_change_thresholds(raw: Any) -> dict[str, dict[str, Any]]:
    parsed = {}
    for metric, spec in _mapping(raw, "gate.change_thresholds").items():
        where = f"gate.change_thresholds.{metric}"
        spec = _mapping(spec, where)
        if set(spec) != {"direction", "absolute"}:
            raise ValueError(f"{where} needs exactly 'direction' and 'absolute', got {spec!r}")
        if spec["direction"] not in DIRECTIONS:
            raise ValueError(f"{where}.direction must be one of {DIRECTIONS}, got {spec['direction']!r}")
        parsed[metric] = {
            "direction": spec["direction"],
            "absolute": _number(spec["absolute"], f"{where}.absolute"),
        }
    return parsed


def _observed(metrics: dict, metric: str, whose: str) -> tuple[float | None, str | None]:
    """The metric's value, or None and the reason it cannot be used."""
    if metric not in metrics:
        return None, f"{metric} is missing from the {whose} metrics"
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{metric} of the {whose} is not a finite number ({value!r})"
    return float(value), None


def _value_check(metric: str, bound: dict[str, float], challenger: dict) -> dict:
    observed, problem = _observed(challenger, metric, "challenger")
    check = {"kind": "value", "metric": metric, "threshold": bound, "observed": observed, "skipped": False}
    if problem:
        return {**check, "passed": False, "reason": problem}
    lower, upper = bound.get("lower", -math.inf), bound.get("upper", math.inf)
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


def _change_check(metric: str, spec: dict[str, Any], challenger: dict, champion: dict | None) -> dict:
    check = {"kind": "change", "metric": metric, "threshold": spec, "observed": None, "skipped": False}
    if champion is None:
        return {**check, "passed": None, "skipped": True, "reason": "no champion to compare with"}
    new, problem = _observed(challenger, metric, "challenger")
    old, old_problem = _observed(champion, metric, "champion")
    if problem or old_problem:
        return {**check, "passed": False, "reason": problem or old_problem}
    delta = round(new - old, 9)  # metrics carry 6 decimals; drop float noise so limits are exact
    limit = spec["absolute"]
    if spec["direction"] == "higher_is_better":
        passed, relation = delta >= limit, ">="
    else:
        passed, relation = delta <= limit, "<="
    verdict = "meets" if passed else "fails"
    reason = (
        f"{metric} changed by {delta:+.6g} ({old:.6g} -> {new:.6g}); "
        f"{verdict} the limit {relation} {limit:+g} ({spec['direction']})"
    )
    values = {"observed": delta, "challenger": new, "champion": old}
    return {**check, **values, "passed": passed, "reason": reason}


def decide(challenger: dict, champion: dict | None, config: dict) -> GateDecision:
    """Judge the challenger's metrics against the gate config (the ``gate`` section of params).

    Blessed when at least one threshold is configured and every check that applies passes.
    Raises ValueError when the config is malformed, so a typo never silently blesses a model.
    """
    config = _mapping(config, "gate")
    value_thresholds = _parse_value_thresholds(config.get("value_thresholds"))
    change_thresholds = _parse_change_thresholds(config.get("change_thresholds"))
    if not value_thresholds and not change_thresholds:
        decision = GateDecision(False, [], ["not blessed: no thresholds configured"], champion)
        logger.warning("gate: %s", decision.reasons[0])
        return decision
    checks = [_value_check(m, b, challenger) for m, b in value_thresholds.items()]
    checks += [_change_check(m, s, challenger, champion) for m, s in change_thresholds.items()]
    failed = [c for c in checks if c["passed"] is False]
    applied = [c for c in checks if c["passed"] is not None]
    skipped = len(checks) - len(applied)
    if failed:
        reasons = [f"{c['kind']} check failed: {c['reason']}" for c in failed]
    else:
        note = f"; {skipped} change check(s) skipped: no champion" if skipped else ""
        reasons = [f"blessed: all {len(applied)} applicable check(s) passed{note}"]
    decision = GateDecision(not failed, checks, reasons, champion)
    logger.info("gate: blessed=%s; %s", decision.blessed, " | ".join(reasons))
    return decision
