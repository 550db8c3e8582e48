"""The serving routing file: which BentoML model serves as champion, and which as challenger.

The service hot-reloads its models from this JSON file; its path is ``$ROUTING_FILE``, by
default ``deployments/routing.json`` at the repository root. The deploy stage rewrites it when
a model is promoted and ``python -m mlops_template.rollback`` when serving is rolled back.
Schema::

    {"model_name": "adult-income",
     "champion": {"model_tag": "adult-income:abc123", "model_version": "3"},
     "challenger": null,            # or {"model_tag": ..., "model_version": ...} (canary, planned)
     "canary_share": 0.1,           # share of requests the challenger gets, in [0, 1]
     "updated_at": "2026-11-26T01:02:03+00:00"}

Writes are validated and atomic (temp file, then rename), so a reader sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.config import project_root
from mlops_template.core.io import read_json, write_json

ENV_VAR = "ROUTING_FILE"
DEFAULT_PATH = paths.ROUTING
KEYS = {"model_name", "champion", "challenger", "canary_share", "updated_at"}
SLOT_KEYS = {"model_tag", "model_version"}


def routes_to_challenger(key: str, share: float) -> bool:
    """Whether a request with routing key ``key`` goes to the challenger.

    Deterministic (the same key always gets the same model, in every worker and replica) and
    uniform: the first 32 bits of the key's sha256, as a fraction of 2**32, fall under ``share``.
    """
    if share <= 0.0:
        return False
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < share


class RoutingError(ValueError):
    """A routing document does not follow the schema."""


def routing_path() -> Path:
    """Where the routing file lives: ``$ROUTING_FILE`` or ``deployments/routing.json``."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else project_root() / DEFAULT_PATH


def _check_slot(name: str, slot: Any) -> None:
    if not isinstance(slot, dict) or set(slot) != SLOT_KEYS:
        raise RoutingError(f"{name} must be an object with exactly {sorted(SLOT_KEYS)}, got {slot!r}")
    tag, version = slot["model_tag"], slot["model_version"]
    if not isinstance(tag, str) or tag.count(":") != 1 or not all(tag.split(":")):
        raise RoutingError(f"{name}.model_tag must be a BentoML tag 'name:version', got {tag!r}")
    if not isinstance(version, str) or not version:
        raise RoutingError(f"{name}.model_version must be a non-empty string, got {version!r}")


def validate_routing(routing: Any) -> dict[str, Any]:
    """Return ``routing`` unchanged if it follows the schema; raise RoutingError naming the fault."""
    if not isinstance(routing, dict) or set(routing) != KEYS:
        keys = sorted(routing) if isinstance(routing, dict) else type(routing).__name__
        raise RoutingError(f"routing must have exactly the keys {sorted(KEYS)}, got {keys}")
    if not isinstance(routing["model_name"], str) or not routing["model_name"]:
        raise RoutingError("model_name must be a non-empty string")
    _check_slot("champion", routing["champion"])
    if routing["challenger"] is not None:
        _check_slot("challenger", routing["challenger"])
    share = routing["canary_share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise RoutingError(f"canary_share must be a number in [0, 1], got {share!r}")
    try:
        datetime.fromisoformat(routing["updated_at"])
    except (TypeError, ValueError) as exc:
        stamp = routing["updated_at"]
        raise RoutingError(f"updated_at must be an ISO 8601 timestamp, got {stamp!r}") from exc
    return routing


def champion_only(model_name: str, model_tag: str, model_version: str, canary_share: float) -> dict[str, Any]:
    """A routing document that sends every request to one champion (no challenger)."""
    return {
        "model_name": model_name,
        "champion": {"model_tag": model_tag, "model_version": str(model_version)},
        "challenger": None,
        "canary_share": float(canary_share),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def read_routing(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate the routing file (FileNotFoundError when there is none yet)."""
    return validate_routing(read_json(path or routing_path()))


def write_routing(path: str | Path | None, routing: dict[str, Any]) -> Path:
    """Validate ``routing`` and write it atomically; return the path written."""
    target = Path(path) if path else routing_path()
    write_json(target, validate_routing(routing))
    return target
