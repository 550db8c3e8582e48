"""The routing document: which BentoML model serves as champion, and which as challenger.

The service hot-reloads its models from this JSON document. On one machine it is a file,
``$ROUTING_FILE``, by default ``deployments/routing.json`` at the repository root. In team mode
``$ROUTING_URL`` (``s3://bucket/prefix/routing.json``) puts it in the shared object store
instead, where every replica watches the same document, and the models it names are published
beside it (``s3://bucket/prefix/models/<name>/<version>.bentomodel``) before the document names
them, so a replica on any host can fetch a model it does not have. The deploy stage rewrites the
document when a model is promoted, ``canary`` when a challenger starts or ends, and
``python -m mlops_template.rollback`` when serving is rolled back. Schema::

    {"model_name": "adult-income",
     "champion": {"model_tag": "adult-income:abc123", "model_version": "3"},
     "challenger": null,            # or {"model_tag": ..., "model_version": ...} (canary, planned)
     "canary_share": 0.1,           # share of requests the challenger gets, in [0, 1]
     "updated_at": "2026-11-26T01:02:03+00:00"}

Writes are validated and atomic (temp file then rename; one PUT in the object store), so a
reader sees the old document or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_template.core import objectstore, paths
from mlops_template.core.config import project_root
from mlops_template.core.io import read_json, write_json

ENV_VAR = "ROUTING_FILE"
URL_ENV_VAR = "ROUTING_URL"
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
    """Where the local routing file lives: ``$ROUTING_FILE`` or ``deployments/routing.json``."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else project_root() / DEFAULT_PATH


def routing_location() -> str | Path:
    """Where the routing document lives: ``$ROUTING_URL`` in team mode, else the local file."""
    url = os.environ.get(URL_ENV_VAR, "").strip()
    if url:
        objectstore.ObjectUrl.parse(url)  # fail at once on a malformed URL
        return url
    return routing_path()


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


def read_routing(location: str | Path | None = None) -> dict[str, Any]:
    """Read and validate the routing document (FileNotFoundError when there is none yet).

    ``location`` is a path or an ``s3://`` URL; by default :func:`routing_location`. An
    unreachable store raises :class:`~mlops_template.core.objectstore.StoreUnavailable`.
    """
    location = location or routing_location()
    if objectstore.is_url(location):
        return validate_routing(json.loads(objectstore.get_bytes(objectstore.ObjectUrl.parse(str(location)))))
    return validate_routing(read_json(location))


def write_routing(location: str | Path | None, routing: dict[str, Any]) -> str | Path:
    """Validate ``routing`` and write it atomically; return where it was written.

    In the object store, the models it names are published first, so no replica ever reads a
    document naming a model it cannot fetch.
    """
    target = location or routing_location()
    validate_routing(routing)
    if objectstore.is_url(target):
        url = objectstore.ObjectUrl.parse(str(target))
        for slot in (routing["champion"], routing["challenger"]):
            if slot is not None:
                publish_model(url, slot["model_tag"])
        objectstore.put_bytes(url, json.dumps(routing, indent=2, sort_keys=True).encode("utf-8"))
        return target
    write_json(Path(target), routing)
    return Path(target)


def document_signature(location: str | Path) -> tuple[Any, ...] | None:
    """What changes when the document is rewritten; None when there is none.

    A file's (mtime, inode, size): atomic renames change the inode. An object's ETag. An
    unreachable store raises StoreUnavailable.
    """
    if objectstore.is_url(location):
        try:
            return (objectstore.etag(objectstore.ObjectUrl.parse(str(location))),)
        except FileNotFoundError:
            return None
    try:
        stat = Path(location).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


def model_archive_url(routing_url: str, model_tag: str) -> objectstore.ObjectUrl:
    """Where a model named by a routing document in the object store is published."""
    name, _, version = model_tag.partition(":")
    return objectstore.ObjectUrl.parse(routing_url).sibling("models", name, f"{version}.bentomodel")


def publish_model(routing_url: objectstore.ObjectUrl | str, model_tag: str) -> None:
    """Export a model from the local BentoML store beside the routing document, once."""
    import bentoml

    target = model_archive_url(str(routing_url), model_tag)
    if objectstore.exists(target):
        return
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "model.bentomodel"
        bentoml.models.export_model(model_tag, str(archive))
        objectstore.upload_file(archive, target)


def fetch_model(routing_url: str, model_tag: str) -> None:
    """Import a model published beside the routing document into the local BentoML store."""
    import bentoml

    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "model.bentomodel"
        objectstore.download_file(model_archive_url(routing_url, model_tag), archive)
        bentoml.models.import_model(str(archive))
