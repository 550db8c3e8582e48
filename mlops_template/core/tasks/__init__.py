"""Prediction tasks: binary, multiclass and regression, behind one :class:`Task` interface.

``task_of(contract)`` is how every part of the project learns what it predicts; nothing else
tests the task by name. A fourth task is one new module with a :class:`Task` subclass, added to
:data:`TASKS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_template.core.tasks.base import Task
from mlops_template.core.tasks.binary import BinaryTask
from mlops_template.core.tasks.multiclass import MulticlassTask
from mlops_template.core.tasks.regression import RegressionTask

if TYPE_CHECKING:
    from mlops_template.core.contract import Contract

TASKS: dict[str, type[Task]] = {t.name: t for t in (BinaryTask, MulticlassTask, RegressionTask)}


def task_of(contract: Contract, decision_values: Any = None) -> Task:
    """The task the contract declares, with its target, classes and positive class.

    ``decision_values`` (multiclass only): the value table evaluate chose answers by, as a model
    package's ``serving.json`` records it.
    """
    if decision_values is not None:
        return MulticlassTask(contract.target, contract.classes, decision_values=decision_values)
    return TASKS[contract.task](contract.target, contract.classes, contract.positive_class)


__all__ = ["TASKS", "BinaryTask", "MulticlassTask", "RegressionTask", "Task", "task_of"]
