"""What the guard's joint checks need to know about the target: the outcomes they count.

The joint checks compare shares of outcomes (how often a row's label is a given class) between
groups of rows. A task supplies its outcomes here, once:

- binary classification (every contract today): the positive class is the outcome whose share
  is compared per group (its complement carries the same information), and both classes are
  candidates for the "nearly constant label" of a trigger;
- multiclass (to plug in): every class is an outcome of both kinds, one-vs-rest;
- regression (to plug in): needs means instead of shares (a z-test of means per group, a
  narrow spread for the trigger); :func:`target_view` raises until that is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract


@dataclass(frozen=True)
class TargetView:
    """The target's outcomes: which classes group shares are compared on, which may be a trigger's."""

    column: str
    shifted: tuple[str, ...]   # classes whose share per group is compared (binary: the positive one)
    classes: tuple[str, ...]   # classes a trigger's nearly constant label may be

    def indicators(self, labels: pd.Series) -> dict[str, np.ndarray]:
        """Per class in ``classes``: 1.0 where a row's label is that class, else 0.0.

        Binary: the second class is the complement of the positive one, so a contract without
        an ``allowed`` list for its target (negative class "not <positive>") works too.
        """
        positive = (labels.astype("string").fillna("") == self.classes[0]).to_numpy(dtype=float)
        return {self.classes[0]: positive, self.classes[1]: 1.0 - positive}


def target_view(contract: Contract) -> TargetView:
    """The outcomes of ``contract``'s target, for the task its target declares."""
    negative = contract.negative_class
    classes = (contract.positive_class, negative)
    return TargetView(contract.target, (contract.positive_class,), classes)
