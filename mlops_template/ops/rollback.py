"""Roll serving back to an earlier champion without rebuilding anything.

Usage (from the repository root)::

    mlops-template rollback [--to VERSION] [--reason TEXT] [--commit]

The target is ``--to VERSION``, or else the champion before the current one according to
``deployments/history.jsonl`` (a second rollback goes one further back). Then, under the
transition lease and in the order of :mod:`mlops_template.ops.transitions`, each step timed:

1. ``archive``: the target's bento is exported again from the BentoML store to
   ``models/serving/champion.bento`` (what ``docker build`` takes);
2. ``registry``: the MLflow alias ``champion`` moves to the target;
3. ``records``: ``deployments/champion.json`` gets the target's deployment record back and a
   ``rollback`` entry is appended to the history (both versions are tagged in MLflow);
4. ``routing``: last, the routing file's champion becomes the target's BentoML model tag
   (recorded in history when it was promoted), written only if nobody changed the document since
   it was read: the service serves it as soon as it reloads the file.

With ``--commit`` ``deployments/`` is then committed.

The target's model and bento must still be in the BentoML store (deploy never deletes them).
The deploy stage will not promote the rolled-back version again on a rerun.

Exit codes (:class:`~mlops_template.core.exitcodes.ExitCode`): 0 rolled back (or the target
already is champion); 1 no target, an unknown version or a failure; 69 a shared service
(tracking server, its database, the object store) does not answer, checked before anything
changes; 75 another retrain, rollback, canary or deploy holds the transition lease, or changed
the routing document while this one ran (try again when it ends).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from mlops_template.core import paths
from mlops_template.core.config import project_root
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.params import load as load_params
from mlops_template.ops import records, transitions
from mlops_template.ops.lease import try_lease
from mlops_template.ops.process import git_commit

logger = logging.getLogger(__name__)


class RollbackError(RuntimeError):
    """There is nothing to roll back to, or the target cannot be served."""


def choose_target(entries: list[dict[str, Any]], model_name: str, current: str | None, to: str | None) -> str:
    """The version to return to: ``to``, or the champion before ``current`` in the history."""
    if to is not None:
        return str(to)
    stack = records.champion_stack(entries, model_name)
    if current is not None and stack and stack[-1] != current:
        logger.warning("history says v%s is champion, champion.json says v%s", stack[-1], current)
    if len(stack) < 2:
        raise RollbackError(f"no earlier champion of {model_name} in {records.HISTORY}; pass --to VERSION")
    return stack[-2]


def ensure_in_store(model_tag: str) -> None:
    """Refuse a target whose BentoML model is no longer in the store."""
    os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
    import bentoml

    try:
        bentoml.models.get(model_tag)
    except bentoml.exceptions.NotFound as exc:
        store = os.environ["BENTOML_HOME"]
        raise RollbackError(f"BentoML model {model_tag} is not in the store {store}") from exc


def rollback(to: str | None, reason: str, commit: bool) -> dict[str, Any]:
    """Do the rollback; return a summary with per-step timings in seconds."""
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[step] = round(now - clock, 3)
        clock = now

    params = load_params()
    name, mlflow_config = params.deploy.model_name, params.mlflow
    serving = transitions.read_serving(verify=False)  # a rollback writes a fresh document
    current = (records.champion() or {}).get("model_version")
    entries = records.read()
    target = choose_target(entries, name, current, to)
    serves = serving.document["champion"]["model_version"] if serving.document else target
    if target == current and serves == target:  # a rollback stopped before its routing step is finished
        return {"status": "unchanged", "model_name": name, "to_version": target, "timings": timings}
    try:
        known = records.deployment_of(entries, mlflow_config, name, target)
    except records.RecordError as exc:
        raise RollbackError(str(exc)) from exc
    model_tag = known["model_tag"]
    ensure_in_store(model_tag)
    previous = ["plan"]

    def on_step(step: str) -> None:  # a step starts: the one before it is timed
        lap(previous[0])
        previous[0] = step

    restored = records.full_deployment({**known, "model_name": name, "model_version": target})
    transitions.roll_back_champion(serving, restored, current, reason, params.deploy.canary_share,
                                   mlflow_config, on_step)
    lap(previous[0])

    if commit and not git_commit(f"rollback: {name} v{current} -> v{target} ({reason})", [str(paths.DEPLOYMENTS)]):
        raise RollbackError("git commit failed")
    if commit:
        lap("commit")
    return {"status": "rolled_back", "model_name": name, "from_version": current, "to_version": target,
            "model_tag": model_tag, "timings": timings}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template rollback``."""
    parser.add_argument("--to", help="model version to restore (default: the previous champion)")
    parser.add_argument("--reason", default="manual rollback", help="why, for the history and MLflow")
    parser.add_argument("--commit", action="store_true", help="git-commit deployments/")


def handle(args: argparse.Namespace) -> int:
    """Take the transition lease and roll back (the shared-services preflight has passed)."""
    started = time.monotonic()
    lock = try_lease("rollback")
    if lock is None:
        print("rollback: another retrain, rollback, canary or deploy holds the transition lease; try again when "
              "it ends", flush=True)
        return ExitCode.LOCKED
    with lock:
        summary = rollback(args.to, args.reason, args.commit)
    summary["seconds"] = round(time.monotonic() - started, 3)
    if summary["status"] == "unchanged":
        print(f"rollback: v{summary['to_version']} already is the champion; nothing to do", flush=True)
    else:
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in summary["timings"].items())
        print(f"rollback: {summary['model_name']} v{summary['from_version']} -> v{summary['to_version']} "
              f"({summary['model_tag']}) in {summary['seconds']:.2f}s ({steps})", flush=True)
    print(json.dumps(summary), flush=True)
    return ExitCode.OK
