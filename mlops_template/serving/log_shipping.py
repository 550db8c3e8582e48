"""Ships a worker's inference log to the shared object store, in batches, off the request path.

In team mode (``INFERENCE_LOG_URL=s3://bucket/prefix``) each replica's log must reach one place
the drift and quality jobs read. The local log files (:mod:`mlops_template.serving.inference_log`)
are the spool: a background thread wakes every ``interval_s``, and uploads the complete lines
added to this worker's files since the last shipment as one object,
``<prefix>/<replica>/<pid>-<file>-<offset>.jsonl``. The name is fixed by where the batch starts,
so a batch shipped again after a crash overwrites itself instead of doubling the log. How far
each file was shipped is kept in ``.shipped-<pid>.json`` beside the files, so a restart resumes.

When the store is unreachable the shipper backs off (up to :data:`MAX_BACKOFF_S`), logs once
when the outage starts and once when it ends, and the lines wait on disk: the log's own rotation
bounds the spool. Lines rotated away before they could be shipped are counted (``on_lost``, in
bytes) and logged, never silently. A worker also takes over the files of workers that are gone
(a restarted replica's old pids), under a lock, so nothing is stranded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mlops_template.core import objectstore
from mlops_template.core.io import write_json
from mlops_template.serving.inference_log import FILE_PREFIX, FILE_SUFFIX

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_BATCH_BYTES = 8 << 20  # one object at most; a larger backlog goes in several
IDENTITY_BYTES = 4096


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(path: Path) -> int | None:
    """The worker pid in ``inference-<pid>.jsonl[.N]``."""
    stem = path.name[len(FILE_PREFIX):].split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


class LogShipper:
    """Uploads new complete lines of this worker's inference-log files every ``interval_s``."""

    def __init__(self, directory: Path, url: str, replica: str, interval_s: float,
                 on_shipped: Callable[[int], None] | None = None,
                 on_lost: Callable[[int], None] | None = None,
                 on_backlog: Callable[[int], None] | None = None) -> None:
        """Ship ``directory``'s files of this process (and of dead workers) below ``url``/``replica``."""
        self.directory = Path(directory)
        self.prefix = objectstore.ObjectUrl.parse(url).child(replica)
        self.interval_s = interval_s
        self.on_shipped, self.on_lost, self.on_backlog = on_shipped, on_lost, on_backlog
        self.pids = {os.getpid()}
        self._claims: list[IO[str]] = []
        self._offsets: dict[int, dict[str, Any]] = {}  # pid -> {file identity: [offset, last size seen]}
        self._stop = threading.Event()
        self._outage_logged = False
        self._thread = threading.Thread(target=self._run, name="inference-log-shipper", daemon=True)

    def start(self) -> LogShipper:
        """Claim orphaned files, load how far each was shipped, start the thread."""
        self._claim_orphans()
        for pid in self.pids:
            self._offsets[pid] = self._load_state(pid)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Ship what is left once (if the store answers), then stop."""
        self._stop.set()
        self._thread.join(timeout)

    def ship_once(self) -> int:
        """Upload everything new now; return the bytes shipped (StoreUnavailable if down)."""
        shipped = backlog = 0
        for pid in sorted(self.pids):
            state = self._offsets.setdefault(pid, {})
            seen: set[str] = set()
            for path in sorted(self.directory.glob(f"{FILE_PREFIX}{pid}{FILE_SUFFIX}*")):
                try:
                    key, size = _identity(path), path.stat().st_size
                except FileNotFoundError:
                    continue
                if key is None:  # not even one complete line yet
                    continue
                seen.add(key)
                offset = state.get(key, [0, 0])[0]
                state[key] = [offset, size]
                while offset < size:
                    data = _complete_lines(path, offset, MAX_BATCH_BYTES)
                    if not data:
                        break
                    objectstore.put_bytes(self.prefix.child(f"{pid}-{key}-{offset:015d}{FILE_SUFFIX}"), data)
                    offset += len(data)
                    shipped += len(data)
                    state[key] = [offset, size]
                    self._save_state(pid)
                backlog += size - offset
            for key in set(state) - seen:  # rotated away: whatever was not shipped is lost
                offset, size = state.pop(key)
                self._lost(pid, size - offset)
            self._save_state(pid)
        if self.on_backlog is not None:
            self.on_backlog(backlog)
        if shipped and self.on_shipped is not None:
            self.on_shipped(shipped)
        return shipped

    def _lost(self, pid: int, count: int) -> None:
        """Report bytes rotated away unshipped (as many as were seen: a lower bound)."""
        if count <= 0:
            return
        logger.error("inference log: %d unshipped bytes of worker %d rotated away before the store took them",
                     count, pid)
        if self.on_lost is not None:
            self.on_lost(count)

    def _run(self) -> None:
        failures = 0
        while True:
            stopping = self._stop.wait(min(self.interval_s * 2 ** failures, MAX_BACKOFF_S))
            try:
                self.ship_once()
            except objectstore.StoreUnavailable as exc:
                failures += 1
                if not self._outage_logged:
                    logger.error("inference log: shipping to %s paused, store unreachable (%s); lines "
                                 "wait on local disk", self.prefix, exc)
                    self._outage_logged = True
            except Exception:
                failures += 1
                logger.exception("inference log: shipping failed")
            else:
                if self._outage_logged:
                    logger.info("inference log: shipping to %s resumed", self.prefix)
                    self._outage_logged = False
                failures = 0
            if stopping:
                return

    def _state_path(self, pid: int) -> Path:
        return self.directory / f".shipped-{pid}.json"

    def _load_state(self, pid: int) -> dict[str, Any]:
        path = self._state_path(pid)
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.error("inference log: shipping state %s unreadable (%s): shipping its files from the "
                         "start (the store overwrites batches already there)", path, exc)
            return {}

    def _save_state(self, pid: int) -> None:
        try:
            write_json(self._state_path(pid), self._offsets.get(pid, {}))
        except OSError as exc:  # an unwritable folder: shipping goes on, a restart re-ships
            logger.debug("inference log: shipping state not saved (%s)", exc)

    def _claim_orphans(self) -> None:
        """Take over the files of workers no longer running, one claimant per dead worker."""
        orphans = {_pid_of(p) for p in self.directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}*")} - {None, *self.pids}
        for pid in sorted(p for p in orphans if p is not None and not _alive(p)):
            handle = open(self.directory / f".ship-claim-{pid}.lock", "a", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._claims.append(handle)  # held for this worker's life
            self.pids.add(pid)
            logger.info("inference log: shipping the files of worker %d, which is gone", pid)


def _identity(path: Path) -> str | None:
    """A log file's identity across renames: its inode and a checksum of its first line.

    The inode alone is not enough: rotation frees one and the next file may get it back.
    """
    with open(path, "rb") as handle:
        first = handle.readline(IDENTITY_BYTES)
    if not first.endswith(b"\n"):
        return None
    return f"{os.stat(path).st_ino}-{zlib.crc32(first):08x}"


def _complete_lines(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` from ``offset``, ending at the last newline in them."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(limit)
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""
