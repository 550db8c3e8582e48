"""The transition lease: one operator at a time changes what serves.

Every command that changes the deployment (retrain, rollback, canary start and decide,
experiments promote, the deploy stage) holds the lease while it reads the state, decides and
writes, so a rollback racing a canary decision waits its turn instead of being silently undone.

- **One machine**: an exclusive ``flock`` on ``.dvc/tmp/retrain.lock``
  (:func:`mlops_template.ops.process.try_lock`), the lock retrain and rollback always took. The
  kernel drops it when its process dies, however it dies.
- **Team mode** (``$ROUTING_URL``): the file lock, and a lease object beside the routing
  document (``transition.lease`` in its folder) that works across machines. It is created with a
  conditional PUT (``If-None-Match: *``), so of two operators exactly one creates it. It names its
  owner, the command and a time to live (``$TRANSITION_LEASE_TTL_S``, default
  :data:`DEFAULT_TTL_S`); the holder renews it every third of that from a background thread (a PUT
  with ``If-Match`` on its own ETag) and marks it released (the same conditional PUT) when done,
  so it needs only the ``GetObject``/``PutObject`` the routing document's writers already have,
  never ``DeleteObject`` (``deploy/k8s/iam/retrain-policy.json``). A holder that crashed stops
  renewing: once the object is older than its time to live, or released, the next operator
  replaces it with ``If-Match`` on the ETag it read (again exactly one wins). Age is judged on the
  store's clock (the object's ``Last-Modified`` against the response's ``Date``), so machines whose
  clocks disagree still agree on when a lease expired.
- **Children**: a holder exports ``$TRANSITION_LEASE_OWNER`` to the processes it starts (retrain's
  ``dvc repro`` runs the deploy stage; ``experiments promote`` runs deploy): a process that finds
  the lease held by that owner works under it instead of waiting for its own parent. The same
  makes the lease re-entrant within one process.

Why a lease object rather than a PostgreSQL advisory lock: the operators reach MLflow's
PostgreSQL only through the tracking server's HTTP API, with MLflow user credentials and no
database ones, and a one-machine setup has no PostgreSQL at all; every writer of the routing
document already holds credentials for the object store the document lives in, so the lease
lives beside what it protects and needs nothing new. An advisory lock would also end with its
database session, which a long retrain would have to keep open through ``dvc repro``.

A command that cannot get the lease stops before changing anything, with
:data:`~mlops_template.core.exitcodes.ExitCode.LOCKED` (75): try again when the holder is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from mlops_template.core import objectstore, paths
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.io import utc_now

OWNER_ENV_VAR = "TRANSITION_LEASE_OWNER"
TTL_ENV_VAR = "TRANSITION_LEASE_TTL_S"
DEFAULT_TTL_S = 120.0
LEASE_NAME = "transition.lease"

logger = logging.getLogger(__name__)


class Locked(RuntimeError):
    """Another operator holds the transition lease; nothing was changed, try again later."""

    code = ExitCode.LOCKED


class LeaseLost(RuntimeError):
    """The lease expired or was taken over while this process held it (it could not renew)."""

    code = ExitCode.LOCKED


def new_owner() -> str:
    """A name for this holder that no other process on any machine shares: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def ttl_from_env() -> float:
    """``$TRANSITION_LEASE_TTL_S``, else :data:`DEFAULT_TTL_S`; ValueError naming a bad value."""
    configured = os.environ.get(TTL_ENV_VAR, "").strip()
    if not configured:
        return DEFAULT_TTL_S
    try:
        ttl = float(configured)
    except ValueError:
        ttl = -1.0
    if not 1.0 <= ttl <= 86400.0:
        raise ValueError(f"{TTL_ENV_VAR} must be a number of seconds in [1, 86400], got {configured!r}")
    return ttl


# --- the store lease ----------------------------------------------------------------------------

class StoreLease:
    """The cross-machine part of the lease: one object in the store, see the module docstring."""

    def __init__(self, url: objectstore.ObjectUrl, owner: str, command: str, ttl_s: float) -> None:
        """A lease on ``url`` for ``owner`` running ``command``; not taken until :meth:`acquire`."""
        self.url, self.owner, self.command, self.ttl_s = url, owner, command, ttl_s
        self.etag: str | None = None
        self.inherited = False
        self.lost: str | None = None
        self._renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self, released: bool = False) -> bytes:
        return json.dumps({"owner": self.owner, "command": self.command, "host": socket.gethostname(),
                           "pid": os.getpid(), "ttl_s": self.ttl_s, "written_at": utc_now(),
                           "renewals": self._renewals, "released": released}).encode("utf-8")

    def acquire(self) -> None:
        """Take the lease (or find it held by this owner); :class:`Locked` naming the holder if not."""
        for _ in range(3):  # the object may vanish between a refused create and the read
            try:
                self.etag = objectstore.put_bytes(self.url, self._body(), if_none_match=True)
                self._start_renewing()
                return
            except objectstore.PreconditionFailed:
                pass
            try:
                data, tag, modified, store_now = objectstore.get_versioned(self.url)
            except FileNotFoundError:
                continue
            holder = _parse(data)
            ttl = float(holder.get("ttl_s") or self.ttl_s)
            expires = modified + timedelta(seconds=ttl)
            expired = bool(holder.get("released")) or (store_now or datetime.now(UTC)) >= expires
            if holder.get("owner") == self.owner and not expired:
                self.etag, self.inherited = tag, True  # our parent's (or our own) lease: it renews it
                return
            if not expired:
                raise Locked(f"{holder.get('command', 'another command')} ({holder.get('owner', 'unknown')}) holds "
                             f"the transition lease {self.url} until {expires.isoformat(timespec='seconds')} "
                             "(store clock)")
            try:
                self.etag = objectstore.put_bytes(self.url, self._body(), if_match=tag)
            except (objectstore.PreconditionFailed, FileNotFoundError):
                raise Locked(f"another operator took over the expired transition lease {self.url} first") from None
            if not holder.get("released"):
                logger.warning("took over the transition lease %s: its holder %s (%s) stopped renewing it %s ago",
                               self.url, holder.get("owner"), holder.get("command"), store_now and store_now - modified)
            self._start_renewing()
            return
        raise Locked(f"the transition lease {self.url} keeps changing; try again")

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_until_stopped, name="transition-lease", daemon=True)
        self._thread.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew()
            if self.lost:
                return

    def renew(self) -> None:
        """Rewrite the lease (``If-Match`` its ETag) so it does not expire; sets :attr:`lost` if taken."""
        self._renewals += 1
        try:
            self.etag = objectstore.put_bytes(self.url, self._body(), if_match=self.etag)
        except (objectstore.PreconditionFailed, FileNotFoundError):
            self.lost = f"the transition lease {self.url} was taken over after it expired"
            logger.error("%s", self.lost)
        except objectstore.StoreUnavailable as exc:
            logger.warning("could not renew the transition lease %s (%s); retrying", self.url, exc)

    def check(self) -> None:
        """:class:`LeaseLost` when the lease is no longer this holder's."""
        if self.lost:
            raise LeaseLost(self.lost)

    def release(self) -> None:
        """Stop renewing and mark the lease released (only while it is still ours); an inherited one stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.inherited or self.lost or self.etag is None:
            return
        try:
            self.etag = objectstore.put_bytes(self.url, self._body(released=True), if_match=self.etag)
        except (objectstore.PreconditionFailed, FileNotFoundError):
            logger.warning("the transition lease %s was no longer ours when released", self.url)
        except objectstore.StoreUnavailable as exc:
            logger.warning("could not release the transition lease %s (%s): it expires in %.0f s",
                           self.url, exc, self.ttl_s)


def _parse(data: bytes) -> dict[str, Any]:
    """A lease object's fields; an unreadable one is an unknown holder (it still expires)."""
    try:
        found = json.loads(data)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


# --- the lease ------------------------------------------------------------------------------------

def _file_holder(path: Path) -> str | None:
    """The owner written in the lock file while its ``flock`` is held; None when nobody holds it."""
    import fcntl

    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


class Lease:
    """The held transition lease: the file lock and, in team mode, the store lease."""

    def __init__(self, owner: str, lock: IO[str] | None, store: StoreLease | None) -> None:
        """What :func:`try_lease` took (``lock`` None when a parent holds the file lock)."""
        self.owner, self.lock, self.store = owner, lock, store
        self._previous_env = os.environ.get(OWNER_ENV_VAR)
        os.environ[OWNER_ENV_VAR] = owner  # children work under this lease

    def check(self) -> None:
        """:class:`LeaseLost` when the store lease was lost (the file lock cannot be)."""
        if self.store is not None:
            self.store.check()

    def release(self) -> None:
        """Give the lease back (what a parent holds stays held)."""
        if self.store is not None:
            self.store.release()
        if self.lock is not None:
            self.lock.close()
        if self._previous_env is None:
            os.environ.pop(OWNER_ENV_VAR, None)
        else:
            os.environ[OWNER_ENV_VAR] = self._previous_env

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(command: str, lock_path: Path = paths.RETRAIN_LOCK) -> Lease:
    """Take the transition lease for ``command``; :class:`Locked` saying who holds it.

    The file lock first, then in team mode the store lease; a holder named by
    ``$TRANSITION_LEASE_OWNER`` (a parent, or this process) is joined rather than waited for.
    """
    from mlops_template.ops.process import try_lock
    from mlops_template.serving import routing

    inherited = os.environ.get(OWNER_ENV_VAR)
    holder = _file_holder(lock_path)
    if inherited and holder == inherited:
        owner, lock = inherited, None
    else:
        owner = new_owner()
        lock = try_lock(lock_path, owner)
        if lock is None:
            raise Locked(f"another retrain, rollback, canary or deploy on this machine holds {lock_path} "
                         f"({_file_holder(lock_path) or 'unknown'})")
    store = None
    location = routing.routing_location()
    if objectstore.is_url(location):
        store = StoreLease(objectstore.ObjectUrl.parse(str(location)).sibling(LEASE_NAME), owner, command,
                           ttl_from_env())
        try:
            store.acquire()
        except BaseException:
            if lock is not None:
                lock.close()
            raise
    return Lease(owner, lock, store)


def try_lease(command: str, lock_path: Path = paths.RETRAIN_LOCK) -> Lease | None:
    """:func:`acquire`, or None (the holder logged) when another operator holds the lease."""
    try:
        return acquire(command, lock_path)
    except Locked as exc:
        logger.error("%s", exc)
        return None


@contextlib.contextmanager
def held(command: str, lock_path: Path = paths.RETRAIN_LOCK) -> Iterator[Lease]:
    """Hold the lease for the ``with`` block (:class:`Locked` if another operator has it)."""
    with acquire(command, lock_path) as lease:
        yield lease
