"""Deployment history: every promotion, rejection and rollback, told the same way twice.

Once in ``deployments/history.jsonl`` (git-tracked, append-only, one JSON object per line)::

    {"at": "2026-11-26T01:02:03+00:00", "action": "promote", "model_name": "adult-income",
     "from_version": "2", "to_version": "3", "who": "ci", "why": "blessed: ...",
     "model_tag": "adult-income:abc", "bento_tag": "adult_income_service:def", "champion": {...}}

``from_version`` is the champion before the action, ``to_version`` the version the action is
about (for ``reject``: the candidate that was refused). Promotions carry the BentoML model tag and
the full champion record, so a rollback can restore a version without rebuilding it.

Once as tags on the MLflow model version the action is about: ``last_action``,
``last_action_at``, ``last_action_by``, ``last_action_reason`` (and ``model_tag``); a rollback
also tags the version it moved away from with ``rolled_back_at/by/reason``.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HISTORY = Path("deployments/history.jsonl")
ACTIONS = ("promote", "reject", "rollback", "canary_start", "canary_promote", "canary_rollback")
CHAMPION_ACTIONS = ("promote", "rollback", "canary_promote")
MAX_TAG_LENGTH = 5000  # MLflow's limit on a tag value


def actor() -> str:
    """Who acts: ``$GIT_AUTHOR_NAME``, else ``ci`` on a CI runner, else ``$USER``."""
    if os.environ.get("GIT_AUTHOR_NAME"):
        return os.environ["GIT_AUTHOR_NAME"]
    if os.environ.get("CI"):
        return "ci"
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def entry(
    action: str, model_name: str, from_version: str | None, to_version: str, why: str, **extra: Any
) -> dict[str, Any]:
    """A history entry stamped with the time and the actor; ``extra`` keys are kept as given."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "action": action,
        "model_name": model_name,
        "from_version": None if from_version is None else str(from_version),
        "to_version": str(to_version),
        "who": actor(),
        "why": why,
        **extra,
    }


def append(item: dict[str, Any], path: str | Path = HISTORY) -> None:
    """Append one entry as one line, under an exclusive lock, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(item, allow_nan=False, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read(path: str | Path = HISTORY) -> list[dict[str, Any]]:
    """Every entry, oldest first; an absent file is an empty history."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tag_mlflow(mlflow_config: dict[str, Any], item: dict[str, Any]) -> None:
    """Write the entry onto the MLflow model version(s) it is about."""
    import mlflow

    from mlops_template import tracking

    tracking.connect(mlflow_config)
    client = mlflow.MlflowClient()
    name, reason = item["model_name"], item["why"][:MAX_TAG_LENGTH]
    tags = {"last_action": item["action"], "last_action_at": item["at"],
            "last_action_by": item["who"], "last_action_reason": reason}
    if item.get("model_tag"):
        tags["model_tag"] = item["model_tag"]
    for key, value in tags.items():
        client.set_model_version_tag(name, item["to_version"], key, value)
    if item["action"] == "rollback" and item["from_version"] not in (None, item["to_version"]):
        for key, value in {"rolled_back_at": item["at"], "rolled_back_by": item["who"],
                           "rolled_back_reason": reason}.items():
            client.set_model_version_tag(name, item["from_version"], key, value)


def record(
    item: dict[str, Any], mlflow_config: dict[str, Any] | None, path: str | Path = HISTORY
) -> dict[str, Any]:
    """Tag MLflow (when a config is given), then append the entry to the history file."""
    if mlflow_config is not None:
        tag_mlflow(mlflow_config, item)
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
