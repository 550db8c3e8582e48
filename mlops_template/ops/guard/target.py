"""What the guard knows about the target: the outcomes the joint checks count, and the label-shift check.

The joint checks compare shares of outcomes (how often a row's label is a given outcome) between
groups of rows. Each task supplies its outcomes here, once:

- binary classification: the positive class is the outcome whose share is compared per group
  (its complement carries the same information), and both classes are candidates for the
  "nearly constant label" of a trigger;
- multiclass: every class is an outcome of both kinds, one-vs-rest;
- regression: the outcomes are the quartiles of the accepted target ("price in its lowest
  quarter", ...), so a group whose values moved to the top quarter, or a trigger that sets the
  target to one value, shows as a share that moved, like a class's.

The marginal ``label_shift`` check compares the batch's target with the accepted one: binary, the
positive share (``max_label_shift``, absolute); multiclass, each class's share, the largest change
held to ``max_label_shift``; regression, the PSI of the target (binned as the drift check bins a
numeric column) held to ``max_psi``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.ops.guard.marginal import positive_share, psi
from mlops_template.ops.guard.report import Check

QUANTILES = (0.25, 0.5, 0.75)  # a numeric target's outcomes: its quarters in the accepted data


@dataclass(frozen=True)
class TargetView:
    """The target's outcomes: which outcomes group shares are compared on, which may be a trigger's.

    ``edges`` (a numeric target) cut the values into the outcomes ``classes`` name, in order; a
    class target has none. ``binary``: the second class is the complement of the first.
    """

    column: str
    shifted: tuple[str, ...]   # outcomes whose share per group is compared (binary: the positive one)
    classes: tuple[str, ...]   # outcomes a trigger's nearly constant label may be
    edges: tuple[float, ...] = ()
    binary: bool = True

    def indicators(self, labels: pd.Series) -> dict[str, np.ndarray]:
        """Per outcome in ``classes``: 1.0 where a row's label is that outcome, else 0.0.

        Binary: the second class is the complement of the positive one, so a contract without
        an ``allowed`` list for its target (negative class "not <positive>") works too. A missing
        or unreadable numeric label is no outcome.
        """
        if self.edges or not self.binary:
            return self._each(labels)
        positive = (labels.astype("string").fillna("") == self.classes[0]).to_numpy(dtype=float)
        return {self.classes[0]: positive, self.classes[1]: 1.0 - positive}

    def _each(self, labels: pd.Series) -> dict[str, np.ndarray]:
        if not self.edges:
            text = labels.astype("string").fillna("").to_numpy()
            return {c: (text == c).astype(float) for c in self.classes}
        values = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float)
        bins = np.searchsorted(np.asarray(self.edges), values, side="left")  # a value on an edge: the lower bin
        known = ~np.isnan(values)
        return {c: ((bins == i) & known).astype(float) for i, c in enumerate(self.classes)}


def quarter_names(column: str, edges: tuple[float, ...]) -> tuple[str, ...]:
    """Readable names of the outcomes ``edges`` cut: ``<= 12.5``, ``12.5 to 20``, ..., ``> 31``."""
    if not edges:
        return (f"any {column}",)
    inner = [f"{a:.4g} to {b:.4g}" for a, b in zip(edges, edges[1:], strict=False)]
    return (f"<= {edges[0]:.4g}", *inner, f"> {edges[-1]:.4g}")


def target_view(contract: Contract, reference: pd.Series | None = None) -> TargetView:
    """The outcomes of ``contract``'s target for the task it declares.

    A numeric (regression) target's outcomes are the quarters of ``reference``, the accepted
    target; ValueError without it.
    """
    if contract.is_binary:
        negative = contract.negative_class
        classes = (contract.positive_class, negative)
        return TargetView(contract.target, (contract.positive_class,), classes)
    if contract.classes:
        return TargetView(contract.target, contract.classes, contract.classes, binary=False)
    if reference is None:
        raise ValueError(f"a numeric target ({contract.target}) needs the accepted values to cut its outcomes at")
    known = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    edges = tuple(float(e) for e in np.unique(np.quantile(known, QUANTILES))) if known.size else ()
    names = quarter_names(contract.target, edges)
    return TargetView(contract.target, names, names, edges=edges or (np.inf,), binary=False)


def class_shares(labels: pd.Series, classes: tuple[str, ...]) -> dict[str, float]:
    """Share of each class among the non-missing labels (all 0 when there are none)."""
    text = labels.dropna().astype(str)
    return {c: float((text == c).mean()) if len(text) else 0.0 for c in classes}


def label_shift(batch: pd.Series, accepted: pd.Series, contract: Contract, thresholds: dict[str, Any]) -> Check:
    """The ``label_shift`` check of the batch's target against the accepted one, for the contract's task."""
    if contract.is_binary:
        batch_share = positive_share(batch, contract.positive_class)
        accepted_share = positive_share(accepted, contract.positive_class)
        shift = abs(batch_share - accepted_share)
        limit = thresholds["max_label_shift"]
        return Check("label_shift", round(shift, 6), limit, bool(shift <= limit),
                     f"positive share {batch_share:.3f} vs {accepted_share:.3f} accepted: "
                     f"shift {shift:.3f} {'within' if shift <= limit else 'above'} the limit {limit}",
                     {"batch": round(batch_share, 6), "accepted": round(accepted_share, 6)})
    if contract.classes:
        ours, theirs = class_shares(batch, contract.classes), class_shares(accepted, contract.classes)
        moved = {c: abs(ours[c] - theirs[c]) for c in contract.classes}
        worst = max(moved, key=moved.get)
        shift, limit = moved[worst], thresholds["max_label_shift"]
        return Check("label_shift", round(shift, 6), limit, bool(shift <= limit),
                     f"class {worst!r} share {ours[worst]:.3f} vs {theirs[worst]:.3f} accepted: shift {shift:.3f} "
                     f"{'within' if shift <= limit else 'above'} the limit {limit} (the largest of "
                     f"{len(contract.classes)} classes)",
                     {"batch": {c: round(v, 6) for c, v in ours.items()},
                      "accepted": {c: round(v, 6) for c, v in theirs.items()}})
    value, limit = psi(accepted, batch), thresholds["max_psi"]
    ours, theirs = pd.to_numeric(batch, errors="coerce"), pd.to_numeric(accepted, errors="coerce")
    return Check("label_shift", round(value, 6), limit, bool(value <= limit),
                 f"target PSI {value:.3f} (mean {ours.mean():.4g} vs {theirs.mean():.4g} accepted) "
                 f"{'within' if value <= limit else 'above'} the limit {limit} (ingest.max_psi)",
                 {"metric": "psi", "batch_mean": round(float(ours.mean()), 6),
                  "accepted_mean": round(float(theirs.mean()), 6)})
