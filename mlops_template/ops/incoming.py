"""Team mode's intake: batches that land under an object-store prefix join the local incoming folder.

Usage (from the repository root, with ``INCOMING_URL=s3://bucket/prefix`` or ``--url``)::

    mlops-template incoming list     # JSON {name: [size, etag, last-modified]} of the batch objects
    mlops-template incoming fetch    # move them into ingest.incoming (data/incoming/)

``retrain`` runs the fetch itself first whenever ``INCOMING_URL`` is set (and ``--incoming`` is
not given), so cron, CI and the Dagster job all take the team's batches the same way; the guard
then checks their content exactly as it checks batches dropped into the folder by hand.

Nothing the bucket's writers control is trusted: an object key is only a name.

- Only objects directly under the prefix whose name matches :data:`SAFE_NAME` (a letter or digit,
  then letters, digits, ``.``, ``_``, ``-``, ending ``.csv`` or ``.csv.gz``, at most 200
  characters) and whose size is at most ``ingest.max_batch_bytes`` (256 MiB by default: the guard
  reads a batch whole into memory) are batches. Any other key (nested below the prefix, ``..``,
  another name or suffix, too large) is refused with a log line naming it and left in the bucket;
  no file is ever written anywhere but the incoming folder, under the batch's own name.
- Each batch is downloaded only while it still has the ETag it was listed with, to a hidden
  temporary file in the incoming folder (a name neither the guard nor the sensor reads), capped
  at the size limit, fsync'ed, then hard-linked to its final name, which never overwrites: a
  different local file of that name keeps its place and the object stays in the bucket, named in
  the log; an identical one (a fetch that died before its delete) counts as fetched.
- The object is deleted only once the local copy and its folder entry are on disk, and only while
  it still has the downloaded ETag: the ETag is compared first, and the delete itself is
  conditional (``If-Match``) where the store supports it. An object rewritten meanwhile stays.
- A store outage while listing exits 69 before anything changes; one later stops the fetch there
  (each object is then either in the bucket, in the folder, or in both, never in neither).
- The retrain credential needs ``s3:DeleteObject`` on the prefix. Without it a fetch still takes
  the batches, logs that each stays in the bucket, and goes on (not 69: the store answered), but a
  later fetch downloads them again: the guard drops a batch already in ``data/raw`` (same content)
  and quarantines a rejected one again, so grant the delete.

Fetches hold ``.dvc/tmp/incoming-fetch.lock`` (75 while another runs), so two never race.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from mlops_template.core import objectstore, paths
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.objectstore import ObjectUrl
from mlops_template.core.params import IngestSection

ENV_VAR = "INCOMING_URL"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,191}\.csv(?:\.gz)?")
FETCH_LOCK = paths.RETRAIN_LOCK.with_name("incoming-fetch.lock")

logger = logging.getLogger(__name__)


def incoming_url(environ: Mapping[str, str] = os.environ, given: str | None = None) -> ObjectUrl | None:
    """The team's incoming prefix: ``given`` (``--url``), else ``$INCOMING_URL``; None when neither is set.

    UserError (65) when it is not ``s3://bucket/prefix`` with a prefix: the bucket root holds the
    team's other objects, which must never be taken for batches.
    """
    raw = (given if given is not None else environ.get(ENV_VAR, "")).strip()
    if not raw:
        return None
    try:
        url = ObjectUrl.parse(raw)
    except ValueError as exc:
        raise UserError(f"{ENV_VAR} must be an s3://bucket/prefix URL: {exc}") from None
    key = url.key.strip("/")
    if not key:
        raise UserError(f"{ENV_VAR} must name a prefix below the bucket (s3://{url.bucket}/incoming), got {raw!r}")
    return ObjectUrl(url.bucket, key)


@dataclass(frozen=True)
class Batch:
    """A batch object to fetch: its name (the key below the prefix), URL, size and ETag."""

    name: str
    url: ObjectUrl
    size: int
    etag: str
    modified: str


def refusal(name: str, size: int, max_bytes: int) -> str | None:
    """Why the object ``name`` (its key below the prefix) is not a batch, or None when it is one."""
    if "/" in name:
        return "nested below the prefix: only objects directly under it are batches"
    if not SAFE_NAME.fullmatch(name):
        return ("not a batch name: a letter or digit, then letters, digits, '.', '_' or '-', "
                "ending .csv or .csv.gz, at most 200 characters")
    if size > max_bytes:
        return f"{size} bytes, above ingest.max_batch_bytes ({max_bytes})"
    return None


def scan(prefix: ObjectUrl, max_bytes: int) -> tuple[list[Batch], list[dict[str, str]]]:
    """The batch objects under ``prefix``, and the refused keys with their reasons (each logged).

    StoreUnavailable when the store does not answer: nothing has been changed yet.
    """
    folder = prefix.key + "/"
    batches: list[Batch] = []
    refused: list[dict[str, str]] = []
    for entry in objectstore.list_entries(prefix):
        name = entry.key[len(folder):] if entry.key.startswith(folder) else entry.key
        if not name:
            continue  # the prefix's own folder marker
        why = refusal(name, entry.size, max_bytes)
        if why is not None:
            logger.warning("refused s3://%s/%r: %s; left in the bucket", prefix.bucket, entry.key, why)
            refused.append({"key": entry.key, "reason": why})
            continue
        modified = entry.last_modified.astimezone(UTC).isoformat()
        batches.append(Batch(name, ObjectUrl(prefix.bucket, entry.key), entry.size, entry.etag, modified))
    return batches, refused


@dataclass
class FetchReport:
    """What one fetch did with each object: fetched, left in the bucket (and why), or refused."""

    url: str
    folder: str
    fetched: list[str] = field(default_factory=list)
    left: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)

    def keep(self, batch: Batch, reason: str, level: int = logging.WARNING) -> None:
        """Record (and log) that ``batch`` stays in the bucket, and why."""
        logger.log(level, "%s stays in the bucket: %s", batch.url, reason)
        self.left.append({"name": batch.name, "reason": reason})


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def land(batch: Batch, folder: Path, max_bytes: int, report: FetchReport) -> bool:
    """Download ``batch`` and link it into ``folder`` durably; True when a copy of it is there now.

    False (the reason recorded) when the object changed or vanished since it was listed, grew past
    the limit, or a different file already has its name. StoreUnavailable propagates, after the
    temporary file is removed.
    """
    final = folder / batch.name
    if os.path.lexists(final) and (not _regular_file(final) or final.stat().st_size != batch.size):
        report.keep(batch, f"a different file named {batch.name} is already in {folder}: "
                           "rename or ingest it, then fetch again")
        return False
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{batch.name}.", suffix=".fetch.tmp")
    tmp = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            objectstore.download_capped(batch.url, out, if_match=batch.etag, max_bytes=max_bytes)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, final)  # never overwrites
        except FileExistsError:
            if not (_regular_file(final) and filecmp.cmp(tmp, final, shallow=False)):
                report.keep(batch, f"a different file named {batch.name} is already in {folder}: "
                                   "rename or ingest it, then fetch again")
                return False
            logger.info("%s is already in %s (an earlier fetch stopped before its delete)", batch.name, folder)
        _fsync_folder(folder)
    except objectstore.PreconditionFailed:
        report.keep(batch, "rewritten since it was listed: the next fetch takes the new content", logging.INFO)
        return False
    except FileNotFoundError:
        logger.info("%s vanished before it was downloaded (another fetch took it)", batch.url)
        return False
    except objectstore.ObjectTooLarge as exc:
        logger.warning("refused %s: %s; left in the bucket", batch.url, exc)
        report.refused.append({"key": batch.url.key, "reason": str(exc)})
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def remove(batch: Batch, report: FetchReport) -> None:
    """Delete the object of a batch now on local disk, only while it still holds what was downloaded."""
    try:
        if objectstore.etag(batch.url) != batch.etag:
            report.keep(batch, "rewritten after it was downloaded: the local copy is the old content")
            return
        objectstore.delete(batch.url, if_match=batch.etag)
    except objectstore.PreconditionFailed:
        report.keep(batch, "rewritten after it was downloaded: the local copy is the old content")
        return
    except FileNotFoundError:
        pass  # another fetch removed it first
    except PermissionError:  # the local copy is durable and guarded as usual; only the clean-up is left
        report.keep(batch, "this credential may not delete it (grant s3:DeleteObject on the prefix, or expire "
                           "objects there by a lifecycle rule); the next fetch finds it already taken")
    report.fetched.append(batch.name)
    logger.info("fetched %s into %s", batch.url, report.folder)


def fetch(prefix: ObjectUrl, folder: Path, max_bytes: int) -> FetchReport:
    """Move every batch object under ``prefix`` into ``folder`` (see the module's docstring).

    Raises :class:`mlops_template.ops.lease.Locked` (75) while another fetch runs and
    StoreUnavailable (69) when the store does not answer.
    """
    from mlops_template.ops.lease import Locked
    from mlops_template.ops.process import try_lock

    lock = try_lock(FETCH_LOCK)
    if lock is None:
        raise Locked(f"another fetch holds {FETCH_LOCK}; nothing was changed, try again later")
    with lock:
        batches, refused = scan(prefix, max_bytes)
        report = FetchReport(str(prefix), str(folder), refused=refused)
        if batches:
            folder.mkdir(parents=True, exist_ok=True)
        for batch in batches:
            if land(batch, folder, max_bytes, report):
                remove(batch, report)
        return report


def fetch_for_retrain(incoming: str | None, cfg: IngestSection) -> dict[str, Any] | None:
    """Retrain's first step in team mode: fetch into ``ingest.incoming``; the report, or None without INCOMING_URL.

    Skipped (None) when retrain was given ``--incoming``: it then reads only what it was given.
    """
    prefix = incoming_url()
    if prefix is None:
        return None
    if incoming is not None:
        logger.info("--incoming %s given: %s is not fetched in this run", incoming, prefix)
        return None
    return asdict(fetch(prefix, Path(cfg.incoming), cfg.max_batch_bytes))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template incoming``."""
    parser.add_argument("action", choices=("list", "fetch"),
                        help="list: the batch objects as JSON; fetch: move them into ingest.incoming")
    parser.add_argument("--url", help=f"the s3://bucket/prefix batches land under (default: ${ENV_VAR})")


def handle(args: argparse.Namespace) -> int:
    """List or fetch the batch objects under the team's incoming prefix."""
    from mlops_template.core.params import load as load_params

    prefix = incoming_url(given=args.url)
    if prefix is None:
        raise UserError(f"no incoming prefix: set {ENV_VAR}=s3://bucket/prefix or give --url")
    cfg = load_params().ingest
    if args.action == "list":
        batches, _ = scan(prefix, cfg.max_batch_bytes)
        print(json.dumps({b.name: [b.size, b.etag, b.modified] for b in batches}, sort_keys=True), flush=True)
        return ExitCode.OK
    report = fetch(prefix, Path(cfg.incoming), cfg.max_batch_bytes)
    print(f"incoming: {len(report.fetched)} batch(es) fetched from {prefix} into {report.folder}, "
          f"{len(report.left)} left, {len(report.refused)} refused", flush=True)
    print(json.dumps(asdict(report)), flush=True)
    return ExitCode.OK
