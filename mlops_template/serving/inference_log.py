"""Append-only log of the service's predictions, read back by the monitoring jobs.

The service calls :meth:`InferenceLog.submit` on the request path; it only puts entries into a
bounded in-memory queue and never blocks or raises, so a slow disk cannot slow down scoring. A
background thread appends them as JSON lines to ``<directory>/inference-<pid>.jsonl``: one file
per process, so several server workers never interleave partial lines. Files rotate by size like
``logging.handlers.RotatingFileHandler`` (``inference-<pid>.jsonl.1`` is the newest backup, the
oldest beyond ``backup_count`` is deleted), so disk use is bounded by about
``max_bytes * (backup_count + 1)`` per process. Files are only ever appended to, so the log
survives restarts; a line cut short by a crash is skipped on reading and never glued to the next
record.

One line per scored record::

    {"ts": "2025-01-31T12:00:00.123456+00:00",   # ISO-8601 UTC, added by submit() if missing
     "request_id": "5f0c...",                     # the request the record came in
     "record_index": 0,                           # position of the record in that request
     "model_version": "adult-income:abc123",      # the model that scored it
     "features": {"age": 39, "workclass": "State-gov", ...},  # contract fields, as received
     "probability": 0.27,                         # positive-class probability
     "label": "<=50K"}                            # the decision returned to the client

Ground truth that arrives later joins on ``(request_id, record_index)``. Create one
``InferenceLog`` per worker process (after any fork), and ``close()`` it on shutdown.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import objectstore

logger = logging.getLogger(__name__)

FILE_PREFIX = "inference-"
FILE_SUFFIX = ".jsonl"
META_COLUMNS = ("ts", "request_id", "record_index", "model_version", "probability", "label")
MAX_BATCH = 1000  # entries written (and flushed) together by the writer thread
FAILURE_LOG_INTERVAL_S = 60.0  # a log that cannot be written says so at most this often
_STOP = object()  # queued by close() to wake the writer


def utc_now_iso() -> str:
    """The current time as an ISO-8601 UTC string, the format of the ``ts`` field."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json_default(value: Any) -> Any:
    """JSON form of values ``json`` does not know: numpy scalars as numbers, others as text."""
    return value.item() if hasattr(value, "item") else str(value)


class InferenceLog:
    """Non-blocking writer of prediction records to rotating JSON-lines files.

    ``buffer_size`` bounds the queue (in entries); when it is full, new entries are dropped and
    ``on_drop(n_dropped)`` is called, for example to increment a Prometheus counter. The writer
    flushes after every batch it takes from the queue, so entries reach the OS within
    milliseconds of being submitted unless the disk is slower than the request rate.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 50_000_000,
        backup_count: int = 10,
        buffer_size: int = 10_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{FILE_PREFIX}{os.getpid()}{FILE_SUFFIX}"
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._on_drop = on_drop
        self._last_failure_log = -FAILURE_LOG_INTERVAL_S
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._file = self._open()
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, entries: list[dict[str, Any]]) -> None:
        """Queue entries for writing, adding ``ts`` where missing; never blocks, never raises."""
        dropped = 0
        try:
            if self._stop.is_set():
                dropped = len(entries)
                return
            now = utc_now_iso()
            for position, entry in enumerate(entries):
                if "ts" not in entry:
                    entry = {"ts": now, **entry}
                try:
                    self._queue.put_nowait(entry)
                except queue.Full:
                    dropped = len(entries) - position
                    return
        except Exception:  # the caller is serving a request: never let logging break it
            logger.exception("inference log: submit failed")
        finally:
            if dropped:
                self._report_drop(dropped)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting entries, write everything queued, flush and close the file."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._queue.put(_STOP, timeout=timeout)  # wakes the writer; it drains what is left
        except queue.Full:
            logger.error("inference log: writer is stuck; entries still queued are lost")
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("inference log: writer did not finish within %.1f s", timeout)
            return
        self._file.close()

    def _report_drop(self, count: int) -> None:
        logger.warning("inference log: dropped %d entries (queue full or log closed)", count)
        if self._on_drop is not None:
            try:
                self._on_drop(count)
            except Exception:
                logger.exception("inference log: on_drop callback failed")

    def _open(self):
        """Open the file for appending; end a line left cut short by a crash first."""
        handle = open(self.path, "a+b")
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        return handle

    def _lost(self, count: int, exc: BaseException) -> None:
        """Count entries a write lost, and say so at most once a minute (a full disk repeats)."""
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
            logger.error("inference log: cannot write %s (%s: %s); entries are counted as dropped",
                         self.path, type(exc).__name__, exc)
            self._last_failure_log = now
        if self._on_drop is not None:
            try:
                self._on_drop(count)
            except Exception:
                logger.exception("inference log: on_drop callback failed")

    def _run(self) -> None:
        """Writer loop: take a batch from the queue, write and flush it; after close, drain."""
        stopping = False
        while not (stopping and self._queue.empty()):
            batch = [] if stopping else [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(entry is _STOP for entry in batch):
                stopping = True
                batch = [entry for entry in batch if entry is not _STOP]
            if not batch:
                continue
            try:
                self._write([json.dumps(e, default=_json_default, separators=(",", ":")) + "\n"
                             for e in batch])
            except OSError as exc:  # a full disk, a folder made read-only: lose the batch, go on
                self._lost(len(batch), exc)
            except Exception:
                logger.exception("inference log: failed to write %d entries", len(batch))

    def _write(self, lines: list[str]) -> None:
        """Append lines, rotating first when they would take the file past ``max_bytes``."""
        data = "".join(lines).encode("utf-8")
        if self._file.tell() > 0 and self._file.tell() + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        if self.backup_count > 0:
            for index in range(self.backup_count - 1, 0, -1):
                source = Path(f"{self.path}.{index}")
                if source.exists():
                    source.replace(f"{self.path}.{index + 1}")
            self.path.replace(f"{self.path}.1")
        else:
            self.path.unlink()
        self._file = self._open()


def _log_files(directory: Path) -> list[tuple[Path, datetime]]:
    """Every log file in ``directory`` (rotated ones too) with its mtime, newest first."""
    files = []
    for path in directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}*"):
        try:
            files.append((path, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
        except FileNotFoundError:  # rotated away since the listing; its new name is listed too
            continue
    return sorted(files, key=lambda item: item[1], reverse=True)


def _shipped_objects(url: str) -> list[tuple[objectstore.ObjectUrl, datetime]]:
    """Every shipped batch below ``url`` (all replicas) with its upload time, newest first."""
    prefix = objectstore.ObjectUrl.parse(url)
    return sorted(((objectstore.ObjectUrl(prefix.bucket, key), modified)
                   for key, modified in objectstore.list_objects(prefix) if key.endswith(FILE_SUFFIX)),
                  key=lambda item: item[1], reverse=True)


def _read_lines(lines: Iterable[str], source: object) -> list[dict[str, Any]]:
    """Parsed entries, skipping (and counting) lines that are not valid JSON."""
    entries, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        logger.warning("inference log: skipped %d unreadable line(s) in %s", bad, source)
    return entries


def _read_file(path: Path) -> list[dict[str, Any]]:
    """Parsed entries of one file."""
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:  # rotated between listing and reading: the oldest backup went away
        logger.warning("inference log: %s disappeared while reading", path)
        return []
    with fh:
        return _read_lines(fh, path)


def _read_object(url: objectstore.ObjectUrl) -> list[dict[str, Any]]:
    """Parsed entries of one shipped batch."""
    return _read_lines(objectstore.get_bytes(url).decode("utf-8", errors="replace").splitlines(), url)


def _to_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Entries as a frame: the meta fields plus one column per feature."""
    features = pd.DataFrame.from_records([e.get("features") or {} for e in entries])
    clashes = sorted(set(features.columns) & set(META_COLUMNS))
    if clashes:
        raise ValueError(f"feature names clash with log fields: {clashes}")
    meta = pd.DataFrame.from_records(
        [{k: e.get(k) for k in META_COLUMNS} for e in entries], columns=list(META_COLUMNS)
    )
    frame = pd.concat([meta, features], axis=1)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame["request_id"] = frame["request_id"].astype("str")
    frame["record_index"] = pd.to_numeric(frame["record_index"]).fillna(0).astype("int64")
    frame["probability"] = pd.to_numeric(frame["probability"]).astype("float64")
    return frame


def _nth_newest(entries: list[dict[str, Any]], n: int) -> pd.Timestamp:
    """The ``n``-th most recent ``ts`` among ``entries``."""
    stamps = pd.to_datetime(pd.Series([e.get("ts") for e in entries]), utc=True, format="ISO8601")
    return stamps.nlargest(n).iloc[-1]


def read_log(
    location: Path | str,
    since: datetime | None = None,
    until: datetime | None = None,
    last_n: int | None = None,
) -> pd.DataFrame:
    """Log entries with ``since <= ts < until``, the newest ``last_n`` of them, sorted by ts.

    ``location`` is a local folder, or in team mode the ``s3://`` prefix the replicas ship to
    (every replica's batches are read). Features become one column each (named as in the
    contract). Files are read newest first and a file last modified before the oldest record
    still needed is skipped unread, since every record in it is older; this keeps a "last N
    records" read cheap on a long log. An empty or missing location gives an empty frame with the
    meta columns.
    """
    if (since is not None and since.tzinfo is None) or (until is not None and until.tzinfo is None):
        raise ValueError("since and until must be timezone-aware datetimes")
    entries: list[dict[str, Any]] = []
    if objectstore.is_url(location):
        sources = [(functools.partial(_read_object, url), modified)
                   for url, modified in _shipped_objects(str(location))]
    else:
        directory = Path(location)
        sources = [(functools.partial(_read_file, path), modified)
                   for path, modified in (_log_files(directory) if directory.is_dir() else [])]
    for read, modified in sources:
        if since is not None and modified < since:
            break
        if last_n is not None and len(entries) >= last_n and modified < _nth_newest(entries, last_n):
            break
        entries.extend(read())
    if not entries:
        return pd.DataFrame(columns=list(META_COLUMNS))
    frame = _to_frame(entries)
    if since is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["ts"] < pd.Timestamp(until)]
    frame = frame.sort_values("ts", kind="stable")
    if last_n is not None:
        frame = frame.tail(last_n)
    return frame.reset_index(drop=True)
