"""Retrain on new data: guard incoming batches, reproduce the pipeline, report, optionally commit.

Usage (from the repository root)::

    mlops-template retrain [--incoming PATH] [--commit]

1. Take the transition lease (:mod:`mlops_template.ops.lease`: a ``flock`` on
   ``.dvc/tmp/retrain.lock``, git-ignored, non-blocking; in team mode also the store lease); the
   deploy stage ``dvc repro`` runs works under it.
2. In team mode (``$INCOMING_URL``, without ``--incoming``) move the batch objects under that
   prefix into ``ingest.incoming`` first (:mod:`mlops_template.ops.incoming`; a store outage is 69).
   Pass every batch in ``--incoming`` (default ``ingest.incoming``, ``data/incoming/``) through
   the bad-batch guard (:mod:`mlops_template.ops.ingest`): accepted batches join ``data/raw/``,
   rejected ones go to ``data/quarantine/batches/`` with a report.
3. Nothing new accepted: say so and stop, unless ``data/raw`` changed since the last successful
   ``dvc repro`` (an earlier run died after ingesting), in which case the pipeline is rerun.
4. ``dvc repro`` (its output streams through), which trains, evaluates, gates and deploys.
5. Print one line for people and one JSON line for machines (the last line of stdout).
6. ``--commit``: commit ``dvc.lock``, ``metrics/``, ``deployments/`` and the new batches.

Exit codes, for cron or CI (:class:`~mlops_template.core.exitcodes.ExitCode`, README "Exit codes"):

- 0 OK: done: a new model was promoted, or the champion was kept because the candidate was not
  blessed, or there was no new data.
- 1 FAILED: ``dvc repro`` or ``git commit`` failed, or the configuration is unusable.
- 2 QUARANTINED: every incoming batch was quarantined: nothing to train on, someone should look.
- 65 BAD_INPUT: ``--incoming`` names no file or folder.
- 69 UNAVAILABLE: a shared service (the tracking server or its database, the object store)
  does not answer; checked before anything is touched, try again when it is back.
- 75 LOCKED: another retrain, rollback, canary or deploy holds the transition lease; nothing was
  touched, try again later.

Safe after a crash: the lock dies with its process, a batch joins ``data/raw`` atomically (and
a batch found both there and in incoming is recognised by content), and ``dvc repro`` is
idempotent, so rerunning the command finishes the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.core import paths
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.params import FeaturizeSection
from mlops_template.core.params import load as load_params
from mlops_template.ops import records
from mlops_template.ops.lease import try_lease
from mlops_template.ops.process import dvc, git_commit

if TYPE_CHECKING:
    from mlops_template.core.contract import Contract

COMMIT_PATHS = ("dvc.lock", str(paths.METRICS), str(paths.DEPLOYMENTS))

logger = logging.getLogger(__name__)


def raw_changed_since_repro(raw: str) -> bool:
    """True when ``data/raw`` differs from what ``dvc.lock`` recorded for the validate stage."""
    proc = dvc("status", "--json", "validate", capture=True)
    if proc.returncode != 0:
        return False
    changes = json.loads(proc.stdout or "{}").get("validate", [])
    return any(raw.rstrip("/") in change.get("changed deps", {}) for change in changes
               if isinstance(change, dict))


def commit_message(result: dict[str, Any], metric: str = "roc_auc") -> str:
    """A one-line commit subject such as ``retrain: adult-income v5 promoted (roc_auc 0.927)``.

    ``metric`` is the task's primary metric, read from ``result`` under its name (``rmse 3.142``).
    """
    auc = f"{metric} {result[metric]:.3f}" if result.get(metric) is not None else f"no {metric}"
    name, candidate = result["model_name"], result["candidate_version"]
    if result["promoted"]:
        return f"retrain: {name} v{candidate} promoted ({auc})"
    return f"retrain: {name} v{candidate} not promoted, champion v{result['champion_version']} kept ({auc})"


def report(summary: dict[str, Any], line: str) -> None:
    """The human line, then the JSON line (last on stdout, for schedulers and scripts)."""
    print(line, flush=True)
    print(json.dumps(summary, allow_nan=False), flush=True)


def model_columns(cfg: FeaturizeSection, contract: Contract) -> list[str]:
    """The contract columns the model reads (``featurize.drop`` and ``ignore`` columns left out).

    The guard treats rows equal in these as near-duplicates: to the model they are the same row.
    """
    from mlops_template.core.features import feature_spec_from

    return feature_spec_from(contract, list(cfg.drop), cfg.derived).source_columns


def run(incoming: str | None, commit: bool, command: str = "mlops-template retrain") -> int:
    """The retrain steps after the lock is held (and the shared services answered); returns the exit code.

    ``command`` is the command line recorded in each batch's report (its provenance).
    """
    from mlops_template.core.contract import load_contract
    from mlops_template.core.features import FeatureError
    from mlops_template.core.tasks import task_of
    from mlops_template.ops.incoming import fetch_for_retrain
    from mlops_template.ops.ingest import ingest
    from mlops_template.pipeline.validation import DataValidationError

    started = time.monotonic()
    summary: dict[str, Any] = {}

    def finish(status: str, code: int, line: str, **extra: Any) -> int:
        report({"status": status, "exit_code": code, **summary, **extra,
                "seconds": round(time.monotonic() - started, 1)}, line)
        return code

    params = load_params()
    cfg, raw = params.ingest, params.data.raw
    source = incoming or cfg.incoming
    fetched = fetch_for_retrain(incoming, cfg)  # team mode (INCOMING_URL): the bucket's batches first
    if fetched is not None:
        summary["fetch"] = fetched
    try:
        contract = load_contract(params.data.contract)
        outcomes = ingest(source, raw, cfg.quarantine, contract, cfg.thresholds(),
                          model_columns=model_columns(params.featurize, contract), command=command)
    except (DataValidationError, FeatureError) as exc:
        logger.error("cannot ingest: %s", exc)
        return finish("failed", ExitCode.FAILED, f"retrain failed: {exc}", error=str(exc))
    accepted = [o for o in outcomes if o.status == "accepted"]
    quarantined = [o for o in outcomes if o.status == "quarantined"]
    summary["accepted"] = [{"batch": o.batch, "rows": o.rows} for o in accepted]
    summary["quarantined"] = [{"batch": o.batch, "path": o.path, "reasons": o.reasons} for o in quarantined]
    intake = f"{len(accepted)} batch(es) accepted, {len(quarantined)} quarantined"

    if not accepted:
        if quarantined and len(quarantined) == len(outcomes):
            return finish("quarantined", ExitCode.QUARANTINED,
                          f"retrain: every incoming batch was quarantined ({len(quarantined)}), "
                          f"see {cfg.quarantine}; nothing retrained")
        if not raw_changed_since_repro(raw):
            return finish("no_new_data", ExitCode.OK,
                          f"retrain: no new data in {source} ({intake}); nothing to do")
        logger.warning("%s changed since the last successful dvc repro: reproducing", raw)

    logger.info("%s; running dvc repro", intake)
    if dvc("repro").returncode != 0:
        return finish("failed", ExitCode.FAILED,
                      f"retrain failed: dvc repro failed ({intake}); rerun after fixing, it resumes")
    metric = task_of(contract).primary_metric
    result = records.outcome_of_pipeline(params.deploy.model_name, metric)
    subject = commit_message(result, metric)
    line = f"retrain: {intake}; {subject.removeprefix('retrain: ')}"
    if commit and not git_commit(subject, [*COMMIT_PATHS, raw, source]):
        return finish("failed", ExitCode.FAILED, f"{line}; git commit FAILED", **result)
    if not commit:
        line += (f"; not committed: git add {' '.join([*COMMIT_PATHS, raw, source])} && "
                 f"git commit -m {shlex.quote(subject)} (or run with --commit)")
    return finish("promoted" if result["promoted"] else "kept", ExitCode.OK, line, **result)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template retrain``."""
    parser.add_argument("--incoming", help="a batch file or a folder of batches (default: ingest.incoming)")
    parser.add_argument("--commit", action="store_true", help="git-commit the results")


def handle(args: argparse.Namespace) -> int:
    """Check the options, take the lock and retrain (the shared-services preflight has passed)."""
    if args.incoming is not None and not Path(args.incoming).exists():
        raise UserError(f"--incoming {args.incoming}: no such file or folder")
    lock = try_lease("retrain")
    if lock is None:
        report({"status": "locked", "exit_code": ExitCode.LOCKED},
               "retrain: another retrain is running; try again later")
        return ExitCode.LOCKED
    given = [*(["--incoming", args.incoming] if args.incoming else []), *(["--commit"] if args.commit else [])]
    command = shlex.join([*args.invocation.split(), "retrain", *given])
    with lock:
        return run(args.incoming, args.commit, command)


def report_error(code: int, reason: str) -> None:
    """The JSON line a scheduler reads, when retrain stops before it starts (service down, bad input)."""
    status = {ExitCode.UNAVAILABLE: "unavailable", ExitCode.BAD_INPUT: "bad_input"}.get(code, "failed")
    print(json.dumps({"status": status, "exit_code": int(code), "error": reason}), flush=True)
