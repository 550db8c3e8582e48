"""The bad-batch guard's checks: what decides whether a batch may join the training data.

- :mod:`.marginal`: rows, invalid, duplicates, label_shift, drift (one column at a time);
- :mod:`.joint`: label_by_group, trigger, label_flips, near_duplicates (the label with the inputs);
- :mod:`.expected`: cumulative_label_given_inputs (labels against what the window's model predicts
  from the inputs: many small relabelling steps in one direction, the boiling frog);
- :mod:`.accepted`: the accepted data and the fixed reference window the cumulative checks use;
- :mod:`.checks`: :func:`check_batch`, every check on one batch; :mod:`.report`: the report.

:mod:`mlops_template.ops.ingest` moves files; this package only judges frames.
"""

from mlops_template.ops.guard.accepted import Accepted, load_accepted, reference_window
from mlops_template.ops.guard.checks import check_batch
from mlops_template.ops.guard.report import BatchReport, Check

__all__ = ["Accepted", "BatchReport", "Check", "check_batch", "load_accepted", "reference_window"]
