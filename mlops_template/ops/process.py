"""Process helpers for the commands that change the repository: a lock, a preflight, dvc and git.

Every command that changes the deployment holds one lock, so a rollback never lands in the
middle of a retrain or a canary decision (:mod:`mlops_template.ops.lease` builds the transition
lease on it and adds, in team mode, a lease in the object store). In
team mode both first check that the shared services answer (:func:`shared_services_down`) and
stop with ``ExitCode.UNAVAILABLE`` (69) before changing anything when one does not. The check
authenticates as MLflow's own client does (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``,
or ``MLFLOW_TRACKING_TOKEN``); its messages name the user, never a password, token or URL userinfo.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from mlops_template.core import paths
from mlops_template.core.params import MlflowSection

# Exit codes (ExitCode.LOCKED 75, ExitCode.UNAVAILABLE 69): mlops_template.core.exitcodes
# An authenticating tracking server checks a password hash on every request: about 0.3 s idle, and
# several seconds for the first requests after a restart on a busy machine.
PREFLIGHT_TIMEOUT_S = 15.0

logger = logging.getLogger(__name__)


def try_lock(path: Path = paths.RETRAIN_LOCK, owner: str | None = None) -> IO[str] | None:
    """Hold an exclusive, non-blocking ``flock`` on ``path``; None when another process has it.

    Keep the returned file open for as long as the lock is needed; the kernel drops the lock
    when the process exits, however it exits. The file names the holder: ``owner``, else the pid.
    The transition lease (:mod:`mlops_template.ops.lease`) is built on this lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        logger.debug("another process holds %s (%s)", path, holder)
        return None
    handle.truncate(0)
    handle.write(owner or str(os.getpid()))
    handle.flush()
    return handle


def redacted(uri: str) -> str:
    """``uri`` without a ``user:password@`` part, fit for a message or a log line."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _tracking_auth() -> tuple[dict[str, Any], str | None]:
    """``requests`` arguments that authenticate as MLflow's client would, and the user's name."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or None
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user is not None and password is not None:
        return {"auth": (user, password)}, user
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}, "(token)"
    return {}, None


def _refusal(uri: str, status: int, user: str | None) -> str:
    """Why the tracking server answered 401 or 403, naming the user but no secret."""
    if status == 401 and user is None:
        return (f"the MLflow tracking server {uri} requires credentials (HTTP 401) and none are set: "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if status == 401:
        return (f"the MLflow tracking server {uri} refused the credentials of user {user!r} (HTTP 401): "
                "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    return f"user {user!r} may not list experiments on the MLflow tracking server {uri} (HTTP 403)"


def shared_services_down(mlflow_config: MlflowSection | dict[str, Any]) -> str | None:
    """What is wrong with the shared services a retrain or rollback needs, or None when all answer.

    A tracking server must list experiments (which needs its database, not just its process);
    the object store holding the routing document must answer. Local stores (sqlite, a routing
    file) need no check. Each check gives up after :data:`PREFLIGHT_TIMEOUT_S`.
    """
    import requests

    from mlops_template.core import objectstore
    from mlops_template.pipeline.tracking import resolve_tracking_uri
    from mlops_template.serving import routing

    uri = resolve_tracking_uri(MlflowSection.parse(mlflow_config).tracking_uri)
    if uri.startswith(("http://", "https://")):
        probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
        auth, user = _tracking_auth()
        user = user or urlsplit(uri).username  # credentials inside the URL, which requests sends too
        shown = redacted(uri)
        try:
            answer = requests.get(probe, params={"max_results": 1}, timeout=PREFLIGHT_TIMEOUT_S, **auth)
        except requests.RequestException as exc:
            return f"the MLflow tracking server {shown} does not answer ({type(exc).__name__})"
        if answer.status_code in (401, 403):
            return _refusal(shown, answer.status_code, user)
        if answer.status_code != 200:
            return (f"the MLflow tracking server {shown} cannot list experiments (HTTP {answer.status_code}: "
                    f"{answer.text[:200].strip()}); is its database up?")
    location = routing.routing_location()
    if objectstore.is_url(location):
        try:
            objectstore.check_reachable(objectstore.ObjectUrl.parse(str(location)))
        except objectstore.StoreUnavailable as exc:
            return f"the object store holding {location} does not answer ({exc})"
    return None


def _env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, so ``dvc`` stages use the same venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def dvc(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` with this venv; output streams through unless ``capture``."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], env=_env(), text=True,
                          capture_output=capture, check=False)


def git_commit(message: str, files: list[str]) -> bool:
    """Stage ``files`` (new, changed and deleted ones) and commit only them; False on failure."""
    def tracked(path: str) -> bool:
        return bool(subprocess.run(["git", "ls-files", "--", path], capture_output=True, text=True).stdout)

    root = Path.cwd().resolve()
    files = [p for p in dict.fromkeys(files)
             if Path(p).resolve().is_relative_to(root) and (Path(p).exists() or tracked(p))]
    add = subprocess.run(["git", "add", "-A", "--", *files], capture_output=True, text=True)
    if add.returncode != 0:
        logger.error("git add failed: %s", add.stderr.strip())
        return False
    files = [p for p in files if subprocess.run(["git", "diff", "--cached", "--quiet", "--", p]).returncode]
    if not files:
        logger.info("nothing changed to commit")
        return True
    done = subprocess.run(["git", "commit", "--quiet", "-m", message, "--", *files],
                          capture_output=True, text=True)
    if done.returncode != 0:
        logger.error("git commit failed: %s", done.stderr.strip() or done.stdout.strip())
        return False
    logger.info("committed: %s", message)
    return True
