"""Roll serving back to an earlier champion without rebuilding anything.

Usage (from the repository root)::

    python -m mlops_template.rollback [--to VERSION] [--reason TEXT] [--commit]

The target is ``--to VERSION``, or else the champion before the current one according to
``deployments/history.jsonl`` (a second rollback goes one further back). Then, each step timed:

1. the routing file's champion becomes the target's BentoML model tag (recorded in history
   when it was promoted): the service serves it as soon as it reloads the file;
2. the MLflow alias ``champion`` moves to the target, and both versions are tagged;
3. the target's bento is exported again from the BentoML store to
   ``models/serving/champion.bento`` (what ``docker build`` takes) and
   ``deployments/champion.json`` gets the target's deployment record back;
4. a ``rollback`` entry is appended to the history; with ``--commit`` ``deployments/`` is
   committed.

The target's model and bento must still be in the BentoML store (deploy never deletes them).
The deploy stage will not promote the rolled-back version again on a rerun.

Exit codes: 0 rolled back (or the target already is champion); 1 no target, an unknown
version or a failure; 69 a shared service (tracking server, its database, the object store)
does not answer, checked before anything changes; 75 a retrain holds the lock (try again when
it ends).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from mlops_template.core import paths
from mlops_template.core.config import load_params, project_root, setup_logging
from mlops_template.core.io import utc_now
from mlops_template.ops import records
from mlops_template.ops.process import EXIT_LOCKED, EXIT_UNAVAILABLE, git_commit, shared_services_down, try_lock
from mlops_template.ops.promotion import publish_champion_archive
from mlops_template.serving import routing

EXIT_OK, EXIT_FAILED = 0, 1

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
    name, mlflow_config = params["deploy"]["model_name"], params["mlflow"]
    current = (records.champion() or {}).get("model_version")
    entries = records.read()
    target = choose_target(entries, name, current, to)
    if target == current:
        return {"status": "unchanged", "model_name": name, "to_version": target, "timings": timings}
    try:
        known = records.deployment_of(entries, mlflow_config, name, target)
    except records.RecordError as exc:
        raise RollbackError(str(exc)) from exc
    model_tag = known["model_tag"]
    ensure_in_store(model_tag)
    lap("plan")

    share = params["deploy"].get("canary_share", 0.0)
    routing.write_routing(None, routing.champion_only(name, model_tag, target, share, known.get("sha256")))
    lap("routing")

    from mlops_template.pipeline import tracking

    item = records.entry("rollback", name, current, target, reason, model_tag=model_tag)
    tracking.tag_action(mlflow_config, item)
    tracking.set_champion(mlflow_config, name, target, {"restored_at": item["at"]})
    lap("mlflow")

    restored = records.full_deployment({**known, "model_name": name, "model_version": target})
    restored = {**publish_champion_archive(restored), "deployed_at": utc_now()}
    records.write_record(records.decision("rollback", current, target, [reason]), champion=restored,
                         challenger=None)
    records.append(item)
    lap("records")

    if commit and not git_commit(f"rollback: {name} v{current} -> v{target} ({reason})", [str(paths.DEPLOYMENTS)]):
        raise RollbackError("git commit failed")
    if commit:
        lap("commit")
    return {"status": "rolled_back", "model_name": name, "from_version": current, "to_version": target,
            "model_tag": model_tag, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, take the retrain lock and roll back."""
    started = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m mlops_template.rollback",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--to", help="model version to restore (default: the previous champion)")
    parser.add_argument("--reason", default="manual rollback", help="why, for the history and MLflow")
    parser.add_argument("--commit", action="store_true", help="git-commit deployments/")
    args = parser.parse_args(argv)
    setup_logging()
    lock = try_lock()
    if lock is None:
        print("rollback: a retrain is running; try again when it ends (or stop it)", flush=True)
        return EXIT_LOCKED
    with lock:
        down = shared_services_down(load_params()["mlflow"])
        if down is not None:
            logger.error("%s", down)
            print(f"rollback not started: {down}; nothing was changed", flush=True)
            return EXIT_UNAVAILABLE
        try:
            summary = rollback(args.to, args.reason, args.commit)
        except (RollbackError, routing.RoutingError) as exc:
            logger.error("%s", exc)
            print(f"rollback failed: {exc}", flush=True)
            return EXIT_FAILED
    summary["seconds"] = round(time.monotonic() - started, 3)
    if summary["status"] == "unchanged":
        print(f"rollback: v{summary['to_version']} already is the champion; nothing to do", flush=True)
    else:
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in summary["timings"].items())
        print(f"rollback: {summary['model_name']} v{summary['from_version']} -> v{summary['to_version']} "
              f"({summary['model_tag']}) in {summary['seconds']:.2f}s ({steps})", flush=True)
    print(json.dumps(summary), flush=True)
    return EXIT_OK

