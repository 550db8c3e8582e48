"""The ``gate`` section of params.yaml: thresholds and golden-set limits, every one checked when read.

The checks word their errors as :mod:`mlops_template.pipeline.gate` always has (``gate.<key>...``);
:func:`mlops_template.pipeline.gate.parse_config` is this section's parser.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mlops_template.core.params_base import Section, as_mapping, finite_number

DIRECTIONS = ("higher_is_better", "lower_is_better")


class ValueBound(BaseModel):
    """``lower <= metric <= upper`` for the challenger (either bound may be absent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    lower: float | None = None
    upper: float | None = None

    def limits(self) -> dict[str, float]:
        """The bounds set, as gate.json records them."""
        return self.model_dump(exclude_none=True)


class ChangeLimit(BaseModel):
    """A bound on challenger minus a reference: ``absolute`` and/or ``relative`` to its magnitude."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    direction: Literal["higher_is_better", "lower_is_better"]
    absolute: float | None = None
    relative: float | None = None

    def limits(self) -> dict[str, Any]:
        """Direction and the limits set, as gate.json records them."""
        return self.model_dump(exclude_none=True)


class SliceGate(BaseModel):
    """``gate.slices``: how much of a metric one group may lose against the champion on the golden set."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Defaults measured on Adult (clean retrains against label flips aimed at one group): see README.
    enabled: bool = True
    metric: str = "soft_recall"
    max_drop: float = 0.05
    min_z: float = 5.0
    min_rows: int = 200


class AnswerChangeGate(BaseModel):
    """``gate.answer_changes``: how far one group's scores may move together."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    max_shift: float = 0.03
    min_z: float = 8.0
    min_rows: int = 200
    numeric_bins: int = 5
    score_bins: int = 20
    inference_log_rows: int = 5000


INTEGER_KEYS = ("min_rows", "numeric_bins", "score_bins", "inference_log_rows")


def _value_thresholds(raw: Any) -> dict[str, dict[str, float]]:
    parsed = {}
    for metric, spec in as_mapping(raw, "gate.value_thresholds").items():
        where = f"gate.value_thresholds.{metric}"
        spec = as_mapping(spec, where)
        unknown = set(spec) - {"lower", "upper"}
        if unknown or not spec:
            raise ValueError(f"{where} needs 'lower' and/or 'upper' and nothing else, got {spec!r}")
        bound = {k: finite_number(v, f"{where}.{k}") for k, v in spec.items()}
        if "lower" in bound and "upper" in bound and bound["lower"] > bound["upper"]:
            raise ValueError(f"{where}: lower {bound['lower']} is above upper {bound['upper']}")
        parsed[metric] = bound
    return parsed


def _change_thresholds(raw: Any, section: str) -> dict[str, dict[str, Any]]:
    parsed = {}
    for metric, spec in as_mapping(raw, f"gate.{section}").items():
        where = f"gate.{section}.{metric}"
        spec = as_mapping(spec, where)
        limits = set(spec) - {"direction"}
        if "direction" not in spec or not limits or not limits <= {"absolute", "relative"}:
            raise ValueError(f"{where} needs 'direction' and 'absolute' and/or 'relative', got {spec!r}")
        if spec["direction"] not in DIRECTIONS:
            raise ValueError(f"{where}.direction must be one of {DIRECTIONS}, got {spec['direction']!r}")
        parsed[metric] = {"direction": spec["direction"],
                          **{k: finite_number(spec[k], f"{where}.{k}") for k in sorted(limits)}}
    return parsed


def _comparison(raw: Any, section: str, model: type[BaseModel]) -> dict[str, Any]:
    """A ``slices`` / ``answer_changes`` section over its defaults; unknown keys and bad values raise."""
    spec = as_mapping(raw, f"gate.{section}")
    unknown = set(spec) - set(model.model_fields)
    if unknown:
        raise ValueError(f"unknown gate.{section} keys {sorted(unknown)}; known: {sorted(model.model_fields)}")
    for key, value in spec.items():
        where = f"gate.{section}.{key}"
        if key == "enabled" and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        if key == "metric" and not isinstance(value, str):
            raise ValueError(f"{where} must be a metric name, got {value!r}")
        if key in INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
        if key not in ("enabled", "metric", *INTEGER_KEYS) and finite_number(value, where) < 0:
            raise ValueError(f"{where} must not be negative, got {value!r}")
    return spec


class GateSection(Section):
    """The promotion gate (see :mod:`mlops_template.pipeline.gate`); every threshold checked when read."""

    KEY: ClassVar[str] = "gate"
    value_thresholds: dict[str, ValueBound] = {}
    change_thresholds: dict[str, ChangeLimit] = {}
    baseline_thresholds: dict[str, ChangeLimit] = {}
    slices: SliceGate = SliceGate()
    answer_changes: AnswerChangeGate = AnswerChangeGate()

    THRESHOLD_SECTIONS: ClassVar[tuple[str, ...]] = ("value_thresholds", "change_thresholds", "baseline_thresholds")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, config: Any) -> Any:  # replaces Section's: the gate words its own errors
        if isinstance(config, BaseModel):
            return config
        config = as_mapping(config, "gate")
        unknown = set(config) - set(cls.model_fields)
        if unknown:
            raise ValueError(f"unknown gate keys {sorted(unknown)}; known: {list(cls.model_fields)}")
        return {
            "value_thresholds": _value_thresholds(config.get("value_thresholds")),
            "change_thresholds": _change_thresholds(config.get("change_thresholds"), "change_thresholds"),
            "baseline_thresholds": _change_thresholds(config.get("baseline_thresholds"), "baseline_thresholds"),
            "slices": _comparison(config.get("slices"), "slices", SliceGate),
            "answer_changes": _comparison(config.get("answer_changes"), "answer_changes", AnswerChangeGate),
        }

    @property
    def has_thresholds(self) -> bool:
        """At least one threshold is configured (a gate without any never blesses)."""
        return any(getattr(self, s) for s in self.THRESHOLD_SECTIONS)
