"""The shared parts of team mode, started for real on loopback: PostgreSQL, an S3 endpoint, MLflow.

- PostgreSQL from Debian's ``postgresql`` package: a throwaway cluster made with ``initdb``
  (run as the ``postgres`` user when the tests run as root), trust authentication on 127.0.0.1.
- moto's server (``moto[server]``, PyPI) as the object store: it speaks the S3 protocol, so
  MLflow, DVC (``dvc-s3``) and boto3 use it exactly as they would use S3.
- ``mlflow server`` with the PostgreSQL backend store and ``--artifacts-destination`` in that
  bucket, so clients upload and download artifacts through the server. It runs with its
  basic-auth app (``--app-name basic-auth``, users and permissions in a second PostgreSQL
  database), set up as the README's Team mode says: bootstrapped with a throwaway admin
  password, which ``scripts/mlflow_auth_setup.py`` then rotates while it creates the users
  (:data:`WRITERS` may log runs and move aliases, :data:`READERS` only read).

Each helper is a context manager that stops what it started. Tests that need a missing binary
are skipped with the package to install.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import (
    REPO,
    STARTUP_TIMEOUT,
    as_user,
    clean_env,
    free_port,
    start_process,
    stop_server,
    wait_for,
)

BIN = Path(sys.executable).parent
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
DATABASES = ("mlflow", "mlflow_auth")  # the tracking store; the auth app's users and permissions
ADMIN = "admin"
WRITERS = ("pipeline", "ci")  # log runs, register versions, move the champion/challenger aliases
READERS = ("reader",)         # read runs and versions, move nothing
# The auth app migrates a second database and loads its FastAPI app per worker: about 70 s on a
# busy 2-core machine (about 15 s idle), so more than the other parts' startup allowance.
MLFLOW_STARTUP_TIMEOUT = 300.0
AUTH_CONFIG = """[mlflow]
default_permission = READ
database_uri = {database}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def postgres_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return found[-1]


class Part:
    """One shared part running as a real process, which a test may stop and start again.

    ``start()`` runs ``command`` (same port every time) and waits for ``ready()``; ``stop()``
    stops it (``stop_command`` if given, then SIGTERM to its process group), as an operator would.
    """

    def __init__(self, what: str, command: list[str], log: Path, ready: Callable[[], bool],
                 url: str, env: dict[str, str] | None = None, user: str | None = None,
                 after_start: Callable[[], None] | None = None, stop_command: list[str] | None = None,
                 timeout: float = STARTUP_TIMEOUT) -> None:
        self.what, self.command, self.log, self.ready, self.url = what, command, log, ready, url
        self.timeout = timeout
        self.env, self.user, self.after_start, self.stop_command = env, user, after_start, stop_command
        self.process: subprocess.Popen | None = None
        self.users: dict[str, str] = {}  # an authenticating server's users and their passwords
        self.admin_bootstrap_password: str | None = None

    def start(self) -> Part:
        self.process = start_process(self.command, self.log, env=self.env, user=self.user)
        wait_for(self.ready, self.process, self.log, self.what, self.timeout)
        if self.after_start is not None:
            self.after_start()
        return self

    def stop(self) -> None:
        if self.process is not None:
            if self.stop_command is not None:
                subprocess.run(as_user(self.user, self.stop_command), capture_output=True, timeout=60)
            stop_server(self.process)
            self.process = None


@contextlib.contextmanager
def running(part: Part) -> Iterator[Part]:
    """Start ``part``; always stop it."""
    try:
        yield part.start()
    finally:
        part.stop()


@contextlib.contextmanager
def postgres(directory: Path) -> Iterator[Part]:
    """A running PostgreSQL cluster with the databases ``mlflow`` (``.url`` is its SQLAlchemy URL)
    and ``mlflow_auth``.

    The cluster lives in a folder of its own under the system temp dir (the ``postgres`` user
    cannot enter pytest's root-only folders); its log goes to ``directory``. Its data is on disk,
    so it comes back whole after ``stop()`` and ``start()``.
    """
    user = "postgres" if os.geteuid() == 0 else None
    directory.mkdir(parents=True, exist_ok=True)
    cluster = Path(tempfile.mkdtemp(prefix="mlops-template-pg-"))
    data = cluster / "data"
    if user:
        shutil.chown(cluster, user, user)
    init = subprocess.run(as_user(user, [postgres_binary("initdb"), "-D", str(data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = free_port()
    ready = postgres_binary("pg_isready")
    created: list[bool] = []

    def create_database() -> None:
        if not created:
            for name in DATABASES:
                done = subprocess.run([postgres_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                       "postgres", name], capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
            created.append(True)

    def accepting() -> bool:
        return subprocess.run([ready, "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0

    part = Part("postgres", [postgres_binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(cluster),
                             "-c", "listen_addresses=127.0.0.1"], directory / "postgres.log", accepting,
                f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow", user=user, after_start=create_database,
                # a fast shutdown, as an operator's would be: a smart one waits for MLflow's pooled connections
                stop_command=[postgres_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    try:
        with running(part):
            yield part
    finally:
        shutil.rmtree(cluster, ignore_errors=True)


@contextlib.contextmanager
def s3(directory: Path, bucket: str) -> Iterator[Part]:
    """moto's S3-protocol server with ``bucket``; ``.url`` is its endpoint.

    moto keeps objects in memory: after ``stop()`` and ``start()`` the bucket is there again,
    empty, as a store restored without its data would be.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        return requests.get(endpoint, timeout=2).status_code < 500

    part = Part("moto_server", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                directory / "moto.log", up, endpoint, env=S3_CREDENTIALS,
                after_start=lambda: client(endpoint).create_bucket(Bucket=bucket))
    with running(part):
        yield part


def client(endpoint: str):
    """A boto3 S3 client for ``endpoint``."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in S3_CREDENTIALS.items()
                                                        if k != "AWS_DEFAULT_REGION"},
                        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])


def objects(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix``."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def s3_env(endpoint: str) -> dict[str, str]:
    """What a client process needs to reach the S3 endpoint (MLflow, DVC and boto3 alike)."""
    return {**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint}


def mlflow_env(url: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
    """What a client of the server at ``url`` needs: its URL and, for ``user``, the credentials."""
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_ENABLE_TELEMETRY": "false"}
    if user is not None:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password or "")
    return env


def set_up_auth(url: str, admin_password: str, directory: Path, experiment: str | None = None,
                model: str | None = None) -> dict[str, str]:
    """Run ``scripts/mlflow_auth_setup.py`` as the README says; return every user's password."""
    command = [sys.executable, str(REPO / "scripts" / "mlflow_auth_setup.py"), "--rotate-admin",
               *[f"--writer={name}" for name in WRITERS], *[f"--reader={name}" for name in READERS]]
    command += [f"--experiment={experiment}"] if experiment else []
    command += [f"--model={model}"] if model else []
    done = subprocess.run(command, env=clean_env(mlflow_env(url, ADMIN, admin_password)), cwd=directory,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    passwords = json.loads(done.stdout)["passwords"]  # printed once, on stdout; never in its log
    assert not [p for p in [admin_password, *passwords.values()] if p in done.stderr]
    return passwords


@contextlib.contextmanager
def mlflow_server(directory: Path, backend: str, endpoint: str, bucket: str, experiment: str | None = None,
                  model: str | None = None) -> Iterator[Part]:
    """``mlflow server`` on ``backend`` storing artifacts in ``s3://bucket/mlflow``; ``.url`` is its URL.

    It runs the basic-auth app with its users in the ``mlflow_auth`` database beside ``backend``;
    at its first start the admin password is rotated and the users are created (``.users``: name to
    password), with permissions on ``experiment`` and ``model`` (default: params.yaml's).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = directory / "basic_auth.ini"
    config.write_text(AUTH_CONFIG.format(database=backend.rsplit("/", 1)[0] + "/mlflow_auth", admin=ADMIN),
                      encoding="utf-8")
    bootstrap = secrets.token_urlsafe(16)  # read at the first start only (the admin exists afterwards)
    env = {**s3_env(endpoint), "MLFLOW_ENABLE_TELEMETRY": "false", "MLFLOW_AUTH_CONFIG_PATH": str(config),
           "MLFLOW_AUTH_ADMIN_PASSWORD": bootstrap, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}

    def set_up_once() -> None:
        if not part.users:
            part.users.update(set_up_auth(url, bootstrap, directory, experiment, model))

    def ready() -> bool:
        """``/health`` answers; after a restart also an authenticated query that needs the database."""
        if requests.get(f"{url}/health", timeout=2).status_code != 200:
            return False
        if not part.users:  # the first start: the set-up creates the users next
            return True
        user = WRITERS[0]
        return requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                            auth=(user, part.users[user]), timeout=30).status_code == 200

    part = Part("mlflow server", [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
                                  "--backend-store-uri", backend,
                                  "--artifacts-destination", f"s3://{bucket}/mlflow", "--host", "127.0.0.1",
                                  "--port", str(port), "--workers", "1"], directory / "mlflow-server.log",
                ready, url, env=env, after_start=set_up_once, timeout=MLFLOW_STARTUP_TIMEOUT)
    part.admin_bootstrap_password = bootstrap  # what the setup rotated away
    with running(part):
        yield part


@contextlib.contextmanager
def shared_stack(root: Path, bucket: str, experiment: str | None = None, model: str | None = None) -> Iterator[dict]:
    """PostgreSQL, the S3 store with ``bucket`` and an authenticating MLflow server on both.

    Yields their URLs (``url``: MLflow, ``endpoint``: S3), the MLflow users' passwords
    (``users``: name to password, see :data:`WRITERS`, :data:`READERS`) and the parts themselves
    (``parts``: ``postgres``, ``s3``, ``mlflow``), which a test may stop and start.
    """
    with postgres(root / "pg") as database, s3(root / "s3", bucket) as store, \
            mlflow_server(root / "mlflow", database.url, store.url, bucket, experiment, model) as tracking:
        yield {"url": tracking.url, "endpoint": store.url, "users": tracking.users,
               "admin_bootstrap_password": tracking.admin_bootstrap_password,
               "parts": {"postgres": database, "s3": store, "mlflow": tracking}}
