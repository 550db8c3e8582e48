"""Row-wise feature code shared by the featurize stage and the service.

Everything here is deterministic and works on one row at a time (vectorised over a frame), so
the service and the offline pipeline compute identical features. Anything fitted on data
(imputation, encoding, scaling) belongs in the model's sklearn Pipeline instead.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mlops_template.core.contract import Contract


class FeatureError(ValueError):
    """The feature configuration does not fit the contract."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns the model sees: contract columns kept plus derived ones.

    ``derived`` maps a new numeric column to a pandas ``DataFrame.eval`` expression over
    contract columns, for example ``capital_net: capital_gain - capital_loss``. Expressions are
    configuration, so a team changes features by editing params.yaml, not code.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    derived: dict[str, str] = field(default_factory=dict)

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
        """Load a spec saved by :meth:`to_json`."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(raw["numeric"]), tuple(raw["categorical"]), dict(raw["derived"]))


def expression_names(expression: str) -> list[str]:
    """Column names a derived-feature expression reads (function names such as ``log`` excluded).

    Raises FeatureError when the expression is not valid Python syntax, which pandas also needs.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise FeatureError(f"{expression!r} is not a valid expression: {exc.msg}") from exc
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    names = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called]
    return list(dict.fromkeys(names))


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
            values = frame.eval(expression, engine="python")
        except Exception as exc:  # pandas raises many types for a bad expression
            raise FeatureError(f"derived feature {name!r} = {expression!r} failed: {exc}") from exc
        features[name] = pd.to_numeric(values, errors="raise").astype("float64")
    for name in spec.numeric:
        features[name] = features[name].astype("float64")
    return features.loc[:, spec.columns]
