"""Row-wise feature code shared by the featurize stage and the service.

Everything here is deterministic and works on one row at a time (vectorised over a frame), so
the service and the offline pipeline compute identical features. Anything fitted on data
(imputation, encoding, scaling) belongs in the model's sklearn Pipeline instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.expressions import ExpressionError, evaluate, names_in, parse_expression


class FeatureError(ValueError):
    """The feature configuration does not fit the contract."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns the model sees: contract columns kept plus derived ones.

    ``derived`` maps a new numeric column to an expression over numeric contract columns, for
    example ``capital_net: capital_gain - capital_loss``, in the small language of
    :mod:`mlops_template.core.expressions` (arithmetic, comparisons, numbers, a few numpy
    functions). Expressions are configuration, so a team changes features by editing
    params.yaml, not code; every spec checks its expressions when it is made, so one read from
    a model artifact is refused before any feature is computed.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    derived: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a spec whose expressions fall outside the admitted language (FeatureError)."""
        for name, expression in self.derived.items():
            if not isinstance(name, str) or not name or name.startswith("_"):
                raise FeatureError(f"derived feature name {name!r} must be a non-empty string "
                                   "not starting with '_'")
            try:
                parse_expression(expression)
            except ExpressionError as exc:
                raise FeatureError(f"derived feature {name!r}: {exc}") from exc

    @property
    def columns(self) -> list[str]:
        """Model input columns in a fixed order: numeric, derived, then categorical."""
        return [*self.numeric, *self.derived, *self.categorical]

    @property
    def numeric_columns(self) -> list[str]:
        """Numeric model inputs, derived ones included."""
        return [*self.numeric, *self.derived]

    @property
    def source_columns(self) -> list[str]:
        """Contract columns the features read: the kept ones plus those derived features use.

        A request must carry these; every other contract column is unused by this model.
        """
        used = [*self.numeric, *self.categorical]
        for expression in self.derived.values():
            used += [n for n in expression_names(expression) if n not in used]
        return used

    def to_json(self, path: str | Path) -> None:
        """Save the spec beside the data or model it describes."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> FeatureSpec:
        """Load a spec saved by :meth:`to_json`; FeatureError when it is malformed or unsafe.

        The file may come from a model artifact, so its shape is checked and its expressions are
        parsed and restricted (in ``__post_init__``) before anything uses them.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeatureError(f"feature spec {path} cannot be read: {exc}") from exc
        if not isinstance(raw, dict):
            raise FeatureError(f"feature spec {path} is not a JSON object")
        return cls(_names(raw.get("numeric"), "numeric", path),
                   _names(raw.get("categorical"), "categorical", path),
                   _derived(raw.get("derived", {}), path))


def _names(value: Any, key: str, path: str | Path) -> tuple[str, ...]:
    """A list of column names from a spec file, or FeatureError naming the key."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FeatureError(f"feature spec {path}: {key!r} must be a list of column names")
    return tuple(value)


def _derived(value: Any, path: str | Path) -> dict[str, str]:
    """The derived-feature map from a spec file, or FeatureError."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise FeatureError(f"feature spec {path}: 'derived' must map names to expressions")
    return dict(value)


def expression_names(expression: str) -> list[str]:
    """Column names a derived-feature expression reads (function names such as ``log`` excluded).

    Raises FeatureError when the expression is not valid syntax; whether it stays inside the
    admitted language is :func:`mlops_template.core.expressions.parse_expression`'s question.
    """
    try:
        return names_in(expression)
    except ExpressionError as exc:
        raise FeatureError(str(exc)) from exc


def feature_spec_from(
    contract: Contract, drop: list[str] | None = None, derived: dict[str, str] | None = None
) -> FeatureSpec:
    """Model inputs: the contract's numeric and categorical columns, less ``drop``, plus ``derived``."""
    drop = list(drop or [])
    known = set(contract.column_names)
    unknown = [c for c in drop if c not in known]
    if unknown:
        raise FeatureError(f"featurize.drop names columns not in the contract: {unknown}")
    derived = dict(derived or {})
    clashes = [name for name in derived if name in known]
    if clashes:
        raise FeatureError(f"derived features reuse contract column names: {clashes}")
    spec = FeatureSpec(
        numeric=tuple(c for c in contract.columns_with_role("numeric") if c not in drop),
        categorical=tuple(c for c in contract.columns_with_role("categorical") if c not in drop),
        derived=derived,
    )
    if not spec.columns:
        raise FeatureError("no feature columns left: check the contract roles and featurize.drop")
    return spec


def build_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Model input for ``frame``: the spec's columns, with derived ones computed from the row."""
    missing = [c for c in (*spec.numeric, *spec.categorical) if c not in frame.columns]
    if missing:
        raise FeatureError(f"input lacks feature columns {missing}")
    features = frame.loc[:, [*spec.numeric, *spec.categorical]].copy()
    for name, expression in spec.derived.items():
        try:
            columns = {c: numeric_column(frame, c) for c in expression_names(expression)}
            values = evaluate(expression, columns, len(frame))
        except (ExpressionError, FeatureError) as exc:
            raise FeatureError(f"derived feature {name!r} = {expression!r} failed: {exc}") from exc
        features[name] = pd.Series(values, index=frame.index, dtype="float64")
    for name in spec.numeric:
        features[name] = features[name].astype("float64")
    return features.loc[:, spec.columns]


def numeric_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` of ``frame`` as float64 with NaN for null, as derived features read it."""
    if name not in frame.columns:
        raise FeatureError(f"input lacks column {name!r}")
    column = frame[name]
    if not pd.api.types.is_numeric_dtype(column):
        raise FeatureError(f"column {name!r} is not numeric ({column.dtype}): derived features "
                           "read numeric columns only")
    return column.to_numpy(dtype="float64", na_value=np.nan)
