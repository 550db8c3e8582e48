"""The routing document: which BentoML model serves as champion, and which as challenger.

The service hot-reloads its models from this JSON document. On one machine it is a file,
``$ROUTING_FILE``, by default ``deployments/routing.json`` at the repository root. In team mode
``$ROUTING_URL`` (``s3://bucket/prefix/routing.json``) puts it in the shared object store
instead, where every replica watches the same document, and the models it names are published
beside it (:mod:`mlops_template.serving.archives`) before the document names them, so a replica
on any host can fetch a model it does not have. The deploy stage rewrites the document when a
model is promoted, ``canary`` when a challenger starts or ends, and
``python -m mlops_template rollback`` when serving is rolled back. Schema::

    {"model_name": "adult-income",
     "champion": {"model_tag": "adult-income:abc123", "model_version": "3",
                  "model_sha256": "<sha256 of model.skops>",        # what the service checks
                  "archive_sha256": "<sha256 of the .bentomodel>"}, # team mode
     "challenger": null,            # or a slot like the champion's (canary)
     "canary_share": 0.1,           # share of requests the challenger gets, in [0, 1]
     "updated_at": "2026-11-26T01:02:03+00:00",
     "signature": {"algorithm": "ed25519", "key_id": "...", "value": "..."}}  # see core/signing.py

Trust: the digests come from the deployment records (``deployments/champion.json``, the history),
not from the model's own directory, so whoever can rewrite a stored model cannot also make the
service accept it. A service loads a slot's model only when its skops file has ``model_sha256``;
a slot without it is refused. In team mode the document must be signed with the deploy key
(``ROUTING_SIGNING_KEY_FILE`` for writers; replicas hold only the public key,
``ROUTING_VERIFY_KEY_FILE``) and each slot must carry ``archive_sha256``; on one machine a
signature is written when a signing key is configured and required by a service that has a
verify key. A refused document raises :class:`RoutingRefused`, whose ``reason`` is one of
:data:`REFUSAL_REASONS`.

Writes are validated and atomic (temp file then rename; one PUT in the object store), so a
reader sees the old document or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_template.core import objectstore, paths, signing
from mlops_template.core.config import project_root
from mlops_template.core.io import read_json, write_json
from mlops_template.serving.routing_errors import (  # noqa: F401 (part of this module's interface)
    REFUSAL_REASONS,
    RoutingConflict,
    RoutingError,
    RoutingRefused,
)

logger = logging.getLogger(__name__)

ENV_VAR = "ROUTING_FILE"
URL_ENV_VAR = "ROUTING_URL"
SIGNING_KEY_ENV_VAR = "ROUTING_SIGNING_KEY_FILE"  # deploy, canary, rollback: the private key
VERIFY_KEY_ENV_VAR = "ROUTING_VERIFY_KEY_FILE"  # replicas: the public key
DEFAULT_PATH = paths.ROUTING
KEYS = {"model_name", "champion", "challenger", "canary_share", "updated_at"}
SLOT_KEYS = {"model_tag", "model_version"}
DIGEST_KEYS = ("model_sha256", "archive_sha256")  # optional in the schema, required by readers
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def routes_to_challenger(key: str, share: float) -> bool:
    """Whether a request with routing key ``key`` goes to the challenger.

    Deterministic (the same key always gets the same model, in every worker and replica) and
    uniform: the first 32 bits of the key's sha256, as a fraction of 2**32, fall under ``share``.
    """
    if share <= 0.0:
        return False
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < share


UNCONDITIONAL = "*"  # write_routing's ``expected`` that checks nothing (a fresh deploy, tests)


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
    if not isinstance(slot, dict) or not SLOT_KEYS <= set(slot) or set(slot) - SLOT_KEYS - set(DIGEST_KEYS):
        raise RoutingError(f"{name} must be an object with {sorted(SLOT_KEYS)} and optionally "
                           f"{list(DIGEST_KEYS)}, got {slot!r}")
    tag, version = slot["model_tag"], slot["model_version"]
    if not isinstance(tag, str) or not TAG.match(tag):
        raise RoutingError(f"{name}.model_tag must be a BentoML tag 'name:version', got {tag!r}")
    if not isinstance(version, str) or not version:
        raise RoutingError(f"{name}.model_version must be a non-empty string, got {version!r}")
    for key in DIGEST_KEYS:
        if key in slot and not (isinstance(slot[key], str) and SHA256.match(slot[key])):
            raise RoutingError(f"{name}.{key} must be a sha256 (64 lower-case hex digits), got {slot[key]!r}")


def validate_routing(routing: Any) -> dict[str, Any]:
    """Return ``routing`` unchanged if it follows the schema; raise RoutingError naming the fault.

    The schema admits a ``signature`` member and slots without digests; whether they are
    required is the reader's decision (:func:`check_trusted`).
    """
    if not isinstance(routing, dict) or set(routing) - {signing.SIGNATURE_FIELD} != KEYS:
        keys = sorted(routing) if isinstance(routing, dict) else type(routing).__name__
        raise RoutingError(f"routing must have exactly the keys {sorted(KEYS)} (and a signature), got {keys}")
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


def slot(model_tag: str, model_version: str, model_sha256: str | None = None) -> dict[str, Any]:
    """A champion or challenger entry; ``model_sha256`` from the deployment record when known."""
    entry: dict[str, Any] = {"model_tag": model_tag, "model_version": str(model_version)}
    if model_sha256:
        entry["model_sha256"] = model_sha256
    return entry


def champion_only(model_name: str, model_tag: str, model_version: str, canary_share: float,
                  model_sha256: str | None = None) -> dict[str, Any]:
    """A routing document that sends every request to one champion (no challenger)."""
    return {
        "model_name": model_name,
        "champion": slot(model_tag, model_version, model_sha256),
        "challenger": None,
        "canary_share": float(canary_share),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def slots(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(role, slot)`` of the document's champion and, if any, challenger."""
    return [(role, document[role]) for role in ("champion", "challenger") if document[role] is not None]


# --- keys -------------------------------------------------------------------------------------

def signing_key_from_env() -> Any:
    """The private key named by ``$ROUTING_SIGNING_KEY_FILE``, or None when unset (RoutingError
    naming the variable when the file is not a usable key)."""
    configured = os.environ.get(SIGNING_KEY_ENV_VAR, "").strip()
    if not configured:
        return None
    try:
        return signing.load_private_key(configured)
    except signing.KeyFileError as exc:
        raise RoutingError(f"{SIGNING_KEY_ENV_VAR}: {exc}") from None


def verify_key_from_env(team: bool) -> Any:
    """The public key named by ``$ROUTING_VERIFY_KEY_FILE``; None when unset on one machine.

    In team mode a replica follows only signed documents, so an unset key is a configuration
    error (KeyFileError saying what to set), raised at start-up.
    """
    configured = os.environ.get(VERIFY_KEY_ENV_VAR, "").strip()
    if configured:
        return signing.load_public_key(configured)
    if team:
        raise signing.KeyFileError(f"{URL_ENV_VAR} is set but {VERIFY_KEY_ENV_VAR} is not: team mode follows only "
                                   f"routing documents signed by the deploy key; point {VERIFY_KEY_ENV_VAR} at its "
                                   f"public key (made with `{signing.KEYGEN_COMMAND}`)")
    return None


# --- reading ----------------------------------------------------------------------------------

def read_routing(location: str | Path | None = None) -> dict[str, Any]:
    """Read and validate the routing document (FileNotFoundError when there is none yet).

    ``location`` is a path or an ``s3://`` URL; by default :func:`routing_location`. An
    unreachable store raises :class:`~mlops_template.core.objectstore.StoreUnavailable`. Only the
    schema is checked here; :func:`check_trusted` decides whether to follow it.
    """
    location = location or routing_location()
    if objectstore.is_url(location):
        return validate_routing(json.loads(objectstore.get_bytes(objectstore.ObjectUrl.parse(str(location)))))
    return validate_routing(read_json(location))


def read_versioned(location: str | Path | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The document as it is now (None when there is none yet) and its version, for a writer.

    The version is the object's ETag in the store, the file's sha256 on one machine; pass it to
    :func:`write_routing` as ``expected`` so the write happens only if nobody wrote in between.
    """
    location = location or routing_location()
    try:
        if objectstore.is_url(location):
            data, tag, _, _ = objectstore.get_versioned(objectstore.ObjectUrl.parse(str(location)))
        else:
            data = Path(location).read_bytes()
            tag = hashlib.sha256(data).hexdigest()
    except FileNotFoundError:
        return None, None
    return validate_routing(json.loads(data)), tag


def check_trusted(document: dict[str, Any], verify_key: Any, team: bool) -> dict[str, Any]:
    """``document`` without its signature if a service may follow it; RoutingRefused if not.

    With ``verify_key`` (always in team mode) the signature must verify; every slot must name its
    ``model_sha256``, and in team mode its ``archive_sha256``.
    """
    if verify_key is not None or team:
        if verify_key is None:
            raise RoutingRefused("unsigned", "no verify key is configured to check the document's signature")
        try:
            document = signing.verify(document, verify_key)
        except signing.SignatureError as exc:
            raise RoutingRefused(exc.reason, str(exc)) from None
    else:
        document = {k: v for k, v in document.items() if k != signing.SIGNATURE_FIELD}
    needed = DIGEST_KEYS if team else DIGEST_KEYS[:1]
    for role, entry in slots(document):
        missing = [key for key in needed if key not in entry]
        if missing:
            raise RoutingRefused("no_digest", f"the {role} slot ({entry['model_tag']}) names no {' or '.join(missing)}")
    return document


def read_for_update(location: str | Path | None = None) -> dict[str, Any]:
    """The current document for a writer that will build on it (canary start, decide).

    When a signing key is configured, the document must carry its signature: a writer never
    re-signs what someone else put in the store. In team mode a signing key is required.
    """
    location = location or routing_location()
    document = read_routing(location)
    key = signing_key_from_env()
    team = objectstore.is_url(location)
    if key is None and team:
        raise RoutingError(f"team mode ({URL_ENV_VAR}) writes only signed routing documents: set "
                           f"{SIGNING_KEY_ENV_VAR} to the deploy key (made with `{signing.KEYGEN_COMMAND}`)")
    if key is None:
        return document
    try:
        return signing.verify(document, key.public_key())
    except signing.SignatureError as exc:
        raise RoutingRefused(exc.reason, f"routing document {location} is not signed by this deploy key "
                             f"({exc}): refusing to build on it; write a fresh one with a deploy or a "
                             f"rollback") from None


# --- writing ----------------------------------------------------------------------------------

def _recorded_sha256(model_tag: str) -> str | None:
    """The skops digest packaging recorded for ``model_tag`` in the writer's BentoML store."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        recorded = bentoml.models.get(model_tag).info.metadata.get("sha256")
    except NotFound:
        return None
    return str(recorded) if recorded else None


def _with_digests(document: dict[str, Any], target: str | Path) -> dict[str, Any]:
    """A copy of ``document`` whose slots carry their digests (publishing the models in team mode).

    A slot without ``model_sha256`` gets the digest packaging recorded in the writer's own store;
    ops commands pass the one in the deployment records.
    """
    document = {k: v for k, v in document.items() if k != signing.SIGNATURE_FIELD}
    for role, entry in slots(document):
        entry = dict(entry)
        if "model_sha256" not in entry:
            recorded = _recorded_sha256(entry["model_tag"])
            if recorded:
                entry["model_sha256"] = recorded
            else:
                logger.warning("routing %s: no model_sha256 known for %s; services will refuse it",
                               role, entry["model_tag"])
        if objectstore.is_url(target):
            from mlops_template.serving import archives

            entry["archive_sha256"] = archives.publish(str(target), entry["model_tag"], entry.get("model_sha256"))
        document[role] = entry
    return document


def write_routing(location: str | Path | None, routing: dict[str, Any],
                  expected: str | None = UNCONDITIONAL) -> str | Path:
    """Validate ``routing``, add its digests, sign it and write it atomically; return where.

    In the object store, the models it names are published first (refused loudly if their key
    already holds a different model), so no replica ever reads a document naming a model it
    cannot fetch; a signing key (``$ROUTING_SIGNING_KEY_FILE``) is required there. On one machine
    the document is signed when a signing key is configured.

    ``expected`` is the version :func:`read_versioned` gave (None: there was no document): the
    write happens only if the document still has it (``If-Match``/``If-None-Match`` on the PUT; on
    a file, its sha256 compared under a lock on its folder), else :class:`RoutingConflict` and
    nothing is written. :data:`UNCONDITIONAL` (the default) writes whatever is there.
    """
    target = location or routing_location()
    team = objectstore.is_url(target)
    validate_routing(routing)
    key = signing_key_from_env()
    if key is None and team:
        raise RoutingError(f"team mode writes only signed routing documents: set {SIGNING_KEY_ENV_VAR} to the "
                           f"deploy key (made with `{signing.KEYGEN_COMMAND}`); nothing was written to {target}")
    document = _with_digests(routing, target)
    if key is not None:
        document = signing.sign(document, key)
    validate_routing(document)
    if team:
        url = objectstore.ObjectUrl.parse(str(target))
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        conditions: dict[str, Any] = ({} if expected == UNCONDITIONAL
                                      else {"if_match": expected, "if_none_match": expected is None})
        try:
            objectstore.put_bytes(url, data, **conditions)
        except (objectstore.PreconditionFailed, FileNotFoundError):
            raise RoutingConflict(_conflict(target)) from None
        return target
    if expected == UNCONDITIONAL:
        write_json(Path(target), document)
        return Path(target)
    with _folder_locked(Path(target)):
        try:
            now: str | None = hashlib.sha256(Path(target).read_bytes()).hexdigest()
        except FileNotFoundError:
            now = None
        if now != expected:
            raise RoutingConflict(_conflict(target))
        write_json(Path(target), document)
    return Path(target)


def _conflict(target: str | Path) -> str:
    return (f"routing document {target} changed since it was read (another deploy, canary or rollback "
            "wrote it): nothing was written; look at what serves now and run the command again")


@contextlib.contextmanager
def _folder_locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``'s folder while a writer compares and replaces the file.

    The folder, not the file: an atomic rename gives the file a new inode, which another writer's
    lock on the old one would not see.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing drops the lock


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
