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


def _parse_change_thresholds(raw: Any, section: str = "change_thresholds") -> dict[str, dict[str, Any]]:
    parsed = {}
    for metric, spec in _mapping(raw, f"gate.{section}").items():
        where = f"gate.{section}.{metric}"
        spec = _mapping(spec, where)
        limits = set(spec) - {"direction"}
        if "direction" not in spec or not limits or not limits <= {"absolute", "relative"}:
            raise ValueError(f"{where} needs 'direction' and 'absolute' and/or 'relative', got {spec!r}")
        if spec["direction"] not in DIRECTIONS:
            raise ValueError(f"{where}.direction must be one of {DIRECTIONS}, got {spec['direction']!r}")
        parsed[metric] = {"direction": spec["direction"],
                          **{k: _number(spec[k], f"{where}.{k}") for k in sorted(limits)}}
    return parsed


THRESHOLD_SECTIONS = ("value_thresholds", "change_thresholds", "baseline_thresholds")
SECTIONS = (*THRESHOLD_SECTIONS, "slices", "answer_changes")
# Defaults measured on Adult (clean retrains against label flips aimed at one group): see README.
COMPARISON_DEFAULTS = {
    "slices": {"enabled": True, "metric": "soft_recall", "max_drop": 0.07, "min_z": 5.0, "min_rows": 200},
    "answer_changes": {"enabled": True, "max_shift": 0.03, "min_z": 8.0, "min_rows": 200, "numeric_bins": 5,
                       "score_bins": 20, "inference_log_rows": 5000},
}
INTEGER_KEYS = ("min_rows", "numeric_bins", "score_bins", "inference_log_rows")


def _parse_comparison(raw: Any, section: str) -> dict[str, Any]:
    """A ``slices`` / ``answer_changes`` section over its defaults; unknown keys and bad values raise."""
    defaults = COMPARISON_DEFAULTS[section]
    spec = _mapping(raw, f"gate.{section}")
    unknown = set(spec) - set(defaults)
    if unknown:
        raise ValueError(f"unknown gate.{section} keys {sorted(unknown)}; known: {sorted(defaults)}")
    parsed = {**defaults, **spec}
    for key, value in parsed.items():
        where = f"gate.{section}.{key}"
        if key == "enabled" and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        if key == "metric" and not isinstance(value, str):
            raise ValueError(f"{where} must be a metric name, got {value!r}")
        if key in INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
        if key not in ("enabled", "metric", *INTEGER_KEYS) and _number(value, where) < 0:
            raise ValueError(f"{where} must not be negative, got {value!r}")
    return parsed


def parse_config(config: Any) -> dict[str, dict]:
    """The ``gate`` params section, checked; ValueError names the key that is malformed."""
    config = _mapping(config, "gate")
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown gate keys {sorted(unknown)}; known: {list(SECTIONS)}")
    return {
        "value_thresholds": _parse_value_thresholds(config.get("value_thresholds")),
        "change_thresholds": _parse_change_thresholds(config.get("change_thresholds")),
        "baseline_thresholds": _parse_change_thresholds(config.get("baseline_thresholds"),
                                                        "baseline_thresholds"),
        "slices": _parse_comparison(config.get("slices"), "slices"),
        "answer_changes": _parse_comparison(config.get("answer_changes"), "answer_changes"),
    }


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
    check = {"kind": "value", "metric": metric, "key": f"gate.value_thresholds.{metric}",
             "threshold": bound, "observed": observed, "skipped": False}
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


def _change_check(metric: str, spec: dict[str, Any], challenger: dict, reference: dict | None,
                  kind: str = "change") -> dict:
    """Challenger minus ``reference`` (the champion, or the baseline for kind ``baseline``)."""
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
    if "relative" in spec:
        changes["relative"] = round(delta / abs(old), 9) if old else (math.inf if delta else 0.0)
    higher = spec["direction"] == "higher_is_better"
    relation = ">=" if higher else "<="
    verdicts = []
    passed = True
    for mode, change in changes.items():
        if mode not in spec:
            continue
        limit = spec[mode]
        ok = change >= limit if higher else change <= limit
        passed = passed and ok
        shown = f"{change:+.6g}" if mode == "absolute" else f"{change:+.2%}"
        wanted = f"{limit:+g}" if mode == "absolute" else f"{limit:+.0%}"
        verdicts.append(f"{mode} change {shown} {'meets' if ok else 'fails'} the limit {relation} {wanted}")
    reason = f"{metric} {old:.6g} ({whose}) -> {new:.6g}: {'; '.join(verdicts)} ({spec['direction']})"
    values = {"observed": delta, "challenger": new, whose: old}
    if "relative" in changes:
        values["relative"] = changes["relative"]
    return {**check, **values, "passed": passed, "reason": reason}


def _golden_checks(parsed: dict, golden: dict | None) -> list[dict]:
    """Change thresholds on the golden set, then the slice and answer-change checks already made."""
    if golden is None:
        return []
    checks = []
    for metric, spec in parsed["change_thresholds"].items():
        check = _change_check(metric, spec, golden["challenger"], golden.get("champion"))
        checks.append({**check, "kind": "golden_change", "key": f"{check['key']} (golden set)"})
    return checks + [dict(c) for c in golden.get("checks", [])]


def decide(challenger: dict, champion: dict | None, config: dict, baseline: dict | None = None,
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
    if not any(parsed[s] for s in THRESHOLD_SECTIONS):
        decision = GateDecision(False, [], ["not blessed: no thresholds configured (gate.*_thresholds)"],
                                champion)
        logger.warning("gate: %s", decision.reasons[0])
        return decision
    checks = [_value_check(m, b, challenger) for m, b in parsed["value_thresholds"].items()]
    checks += [_change_check(m, s, challenger, baseline, "baseline")
               for m, s in parsed["baseline_thresholds"].items()]
    checks += [_change_check(m, s, challenger, champion) for m, s in parsed["change_thresholds"].items()]
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
