"""The deployment records: ``deployments/champion.json`` and ``deployments/history.jsonl``.

This module is their only reader and writer, so every command that changes what serves (the
deploy stage, canary, rollback, retrain) leaves them in the one shape below.

``champion.json`` (git-tracked, rewritten atomically)::

    {"champion": DEPLOYMENT or null, "challenger": DEPLOYMENT or null, "last_decision": {...}}

where a DEPLOYMENT has exactly :data:`DEPLOYMENT_FIELDS`: model name and version, MLflow run,
bento and BentoML model tags, the exported archive and its sha256, the model's sha256, the
decision threshold, the test ROC AUC, the git revision and when it was deployed; a model of a task
without a threshold or a ROC AUC (regression, multiclass) has them null and adds
``test_metric`` (:data:`OPTIONAL_FIELDS`): its task's primary metric on the test set,
``{"name": "rmse", "value": 3.1}``. The archive of
the champion is always ``models/serving/champion.bento`` (what ``docker build`` takes), that of
a challenger ``models/serving/challenger.bento``. ``last_decision`` says what happened last:
``action``, ``at``, ``from_version``, ``to_version``, ``reasons`` (a gate decision adds
``candidate_version``, ``blessed`` and ``deployed``).

``history.jsonl`` (git-tracked, append-only, one JSON object per line)::

    {"at": "2026-11-26T01:02:03+00:00", "action": "promote", "model_name": "adult-income",
     "from_version": "2", "to_version": "3", "who": "ci", "why": "blessed: ...",
     "model_tag": "adult-income:abc", "bento_tag": "adult_income_service:def", "champion": {...}}

``from_version`` is the champion before the action, ``to_version`` the version the action is
about (for ``reject``: the candidate that was refused). Promotions carry the BentoML model tag and
the full deployment record, so a rollback can restore a version without rebuilding it. Each
entry is also written as tags on the MLflow model version it is about (``last_action``,
``last_action_at``, ``last_action_by``, ``last_action_reason``, ``model_tag``; a rollback also
tags the version it moved away from with ``rolled_back_at/by/reason``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.io import read_json, utc_now, write_json

HISTORY = paths.HISTORY
RECORD = paths.CHAMPION_RECORD
DEPLOYMENT_FIELDS = ("model_name", "model_version", "mlflow_run_id", "bento_tag", "model_tag", "archive",
                     "archive_sha256", "sha256", "threshold", "test_roc_auc", "git_revision", "deployed_at")
OPTIONAL_FIELDS = ("test_metric",)  # kept when given: binary records stay as they always were
ACTIONS = ("promote", "reject", "rollback", "canary_start", "canary_promote", "canary_rollback")
CHAMPION_ACTIONS = ("promote", "rollback", "canary_promote")

logger = logging.getLogger(__name__)


def actor() -> str:
    """Who acts: ``$GIT_AUTHOR_NAME``, else ``ci`` on a CI runner, else ``$USER``, else git's user name.

    A cron job or container often has no ``$USER``; the history still names someone when git
    knows who commits here.
    """
    if os.environ.get("GIT_AUTHOR_NAME"):
        return os.environ["GIT_AUTHOR_NAME"]
    if os.environ.get("CI"):
        return "ci"
    return os.environ.get("USER") or os.environ.get("LOGNAME") or _git_user_name() or "unknown"


def _git_user_name() -> str | None:
    """``git config user.name`` where git and a configured name exist, else None."""
    try:
        done = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def entry(
    action: str, model_name: str, from_version: str | None, to_version: str, why: str, **extra: Any
) -> dict[str, Any]:
    """A history entry stamped with the time and the actor; ``extra`` keys are kept as given."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    return {
        "at": utc_now(),
        "action": action,
        "model_name": model_name,
        "from_version": None if from_version is None else str(from_version),
        "to_version": str(to_version),
        "who": actor(),
        "why": why,
        **extra,
    }


def append(item: dict[str, Any], path: str | Path = HISTORY) -> None:
    """Append one entry as one line, under an exclusive lock, flushed to disk.

    After a torn last line (a crash mid-append) the entry starts on a new line, so the torn one
    stays the only damaged line and :func:`read` keeps every complete entry.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(item, allow_nan=False, sort_keys=False) + "\n"
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                logger.warning("%s ended with an incomplete line: the new entry starts on a line of its own", path)
                line = "\n" + line
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read(path: str | Path = HISTORY) -> list[dict[str, Any]]:
    """Every entry, oldest first; an absent file is an empty history.

    A last line without its newline is what a crash in the middle of :func:`append` leaves: it is
    left out with a warning (the complete lines before it are all returned), and the next append
    starts on a line of its own. A line an older version appended right after torn text (torn
    text, then a whole entry) gives back the whole entry; any other unreadable line is left out
    with a warning naming it. Reading never fails on the history's content.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # after the last newline: "" when the file ends properly
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        found = _entry_in(line)
        if found is None:
            logger.warning("%s line %d is not a history entry: ignored (%d characters)", path, number, len(line))
        else:
            entries.append(found)
    if torn.strip():
        logger.warning("%s ends with an incomplete line (%d characters, a write cut short): ignored; "
                       "the %d complete entries are kept", path, len(torn), len(entries))
    return entries


def _entry_in(line: str) -> dict[str, Any] | None:
    """The entry a history line holds: the whole line, else the last entry after torn text."""
    for start in (0, line.rfind('{"at": ')):
        if start < 0:
            continue
        try:
            found = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(found, dict) and "action" in found:
            if start:
                logger.warning("history line after torn text: the entry at %s is kept", found.get("at"))
            return found
    return None


def record(
    item: dict[str, Any], mlflow_config: dict[str, Any] | None, path: str | Path = HISTORY
) -> dict[str, Any]:
    """Tag MLflow (when a config is given), then append the entry to the history file."""
    if mlflow_config is not None:
        from mlops_template.pipeline import tracking

        tracking.tag_action(mlflow_config, item)
    append(item, path)
    return item


def champion_stack(entries: list[dict[str, Any]], model_name: str) -> list[str]:
    """Champion versions in the order they took over, rolled-back ones popped off.

    The last element is the current champion, the one before it the version a rollback returns to.
    """
    stack: list[str] = []
    for item in entries:
        if item["model_name"] != model_name or item["action"] not in CHAMPION_ACTIONS:
            continue
        version = item["to_version"]
        if item["action"] == "rollback" and version in stack:
            del stack[stack.index(version) + 1:]
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def promotion_of(entries: list[dict[str, Any]], model_name: str, version: str) -> dict[str, Any] | None:
    """The latest promotion entry of ``version`` (it holds the model tag and champion record)."""
    for item in reversed(entries):
        if (item["model_name"] == model_name and item["to_version"] == str(version)
                and item["action"] in ("promote", "canary_promote") and item.get("model_tag")):
            return item
    return None


def rolled_back(entries: list[dict[str, Any]], model_name: str, version: str) -> dict[str, Any] | None:
    """The rollback that moved serving away from ``version``, unless it became champion again since."""
    for item in reversed(entries):
        if item["model_name"] != model_name:
            continue
        if item["action"] == "rollback" and item["from_version"] == str(version):
            return item
        if item["action"] in CHAMPION_ACTIONS and item["to_version"] == str(version):
            return None
    return None


# --- champion.json ----------------------------------------------------------------------------

class RecordError(ValueError):
    """A deployment record lacks fields or has unknown ones."""


def deployment(**fields: Any) -> dict[str, Any]:
    """A deployment record with exactly :data:`DEPLOYMENT_FIELDS` (missing ones are an error), and
    those of :data:`OPTIONAL_FIELDS` given."""
    missing = [f for f in DEPLOYMENT_FIELDS if f not in fields]
    unknown = sorted(set(fields) - set(DEPLOYMENT_FIELDS) - set(OPTIONAL_FIELDS))
    if missing or unknown:
        raise RecordError(f"deployment record: missing {missing}, unknown {unknown}")
    return {f: fields[f] for f in (*DEPLOYMENT_FIELDS, *OPTIONAL_FIELDS) if f in fields}


def read_record(path: str | Path = RECORD) -> dict[str, Any]:
    """The whole record; an absent file is a repository that never deployed."""
    path = Path(path)
    record = read_json(path) if path.exists() else {}
    return {"champion": record.get("champion"), "challenger": record.get("challenger"),
            "last_decision": record.get("last_decision")}


def champion(path: str | Path = RECORD) -> dict[str, Any] | None:
    """The deployment serving now, or None before the first deploy."""
    return read_record(path)["champion"]


def decision(action: str, from_version: str | None, to_version: str | None, reasons: list[str],
             **extra: Any) -> dict[str, Any]:
    """A ``last_decision`` entry: what happened, between which versions, and why."""
    return {"at": utc_now(), "action": action, "from_version": from_version, "to_version": to_version,
            "reasons": list(reasons), **extra}


def write_record(last_decision: dict[str, Any], champion: Any = ..., challenger: Any = ...,
                 path: str | Path = RECORD) -> dict[str, Any]:
    """Replace the champion and/or challenger (``...`` keeps them) and the last decision."""
    record = read_record(path)
    for slot, value in (("champion", champion), ("challenger", challenger)):
        if value is not ...:
            record[slot] = None if value is None else deployment(**value)
    record["last_decision"] = last_decision
    write_json(path, record)
    return record


def deployment_of(entries: list[dict[str, Any]], mlflow_config: dict[str, Any] | None, model_name: str,
                  version: str) -> dict[str, Any]:
    """What is known of ``version``'s deployment: its latest promotion's record, else its MLflow tags.

    Always holds ``model_tag``; RecordError when the version was never deployed.
    """
    promoted = promotion_of(entries, model_name, version)
    if promoted:
        return {**(promoted.get("champion") or {}), "model_tag": promoted["model_tag"]}
    tags = None
    if mlflow_config is not None:
        from mlops_template.pipeline import tracking

        tags = tracking.version_tags(mlflow_config, model_name, str(version))
    if tags is None:
        raise RecordError(f"{model_name} v{version} is not in the history or the MLflow registry")
    if not tags.get("model_tag"):
        raise RecordError(f"{model_name} v{version} was never deployed: no BentoML model tag is recorded")
    return {"model_name": model_name, "model_version": str(version), "model_tag": tags["model_tag"],
            "bento_tag": tags.get("bento_tag")}


def full_deployment(partial: dict[str, Any]) -> dict[str, Any]:
    """A deployment record from what is known, unknown fields None (older records lack some)."""
    return deployment(**{f: partial.get(f) for f in DEPLOYMENT_FIELDS},
                      **{f: partial[f] for f in OPTIONAL_FIELDS if partial.get(f) is not None})


# --- what a pipeline run decided ----------------------------------------------------------------

def outcome_of_pipeline(model_name: str, metric: str = "roc_auc") -> dict[str, Any]:
    """What the pipeline decided: candidate, blessing, reasons, the champion now serving, and the
    candidate's test ``metric`` (the task's primary metric) under its own name.

    From ``metrics/gate.json``, ``metrics/evaluation.json`` and ``deployments/champion.json``;
    retrain and ``experiments promote`` report it after their ``dvc repro``.
    """
    gate = read_json(paths.GATE)
    record = read_record()
    champion = record.get("champion") or {}
    decision = record.get("last_decision") or {}
    candidate = str(gate["candidate"]["model_version"])
    evaluation = read_json(paths.EVALUATION) if paths.EVALUATION.exists() else {}
    promoted = (str(champion.get("model_version")) == candidate
                and decision.get("candidate_version") == candidate and bool(decision.get("blessed")))
    return {
        "model_name": model_name,
        "candidate_version": candidate,
        "blessed": bool(gate["blessed"]),
        "promoted": promoted,
        "champion_version": champion.get("model_version"),
        metric: evaluation.get(metric),
        "reasons": decision.get("reasons", gate["reasons"]),
    }
