"""The shared parts of team mode, started for real on loopback: PostgreSQL, an S3 endpoint, MLflow.

- PostgreSQL from Debian's ``postgresql`` package: a throwaway cluster made with ``initdb``
  (run as the ``postgres`` user when the tests run as root), trust authentication on 127.0.0.1.
- moto's server (``moto[server]``, PyPI) as the object store: it speaks the S3 protocol, so
  MLflow, DVC (``dvc-s3``) and boto3 use it exactly as they would use S3.
- ``mlflow server`` with the PostgreSQL backend store and ``--artifacts-destination`` in that
  bucket, so clients upload and download artifacts through the server.

Each helper is a context manager that stops what it started. Tests that need a missing binary
are skipped with the package to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import as_user, free_port, start_process, stop_server, wait_for

BIN = Path(sys.executable).parent
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


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
                 after_start: Callable[[], None] | None = None, stop_command: list[str] | None = None) -> None:
        self.what, self.command, self.log, self.ready, self.url = what, command, log, ready, url
        self.env, self.user, self.after_start, self.stop_command = env, user, after_start, stop_command
        self.process: subprocess.Popen | None = None

    def start(self) -> Part:
        self.process = start_process(self.command, self.log, env=self.env, user=self.user)
        wait_for(self.ready, self.process, self.log, self.what)
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
    """A running PostgreSQL cluster with a database ``mlflow``; ``.url`` is its SQLAlchemy URL.

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
            done = subprocess.run([postgres_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                   "mlflow"], capture_output=True, text=True, timeout=60)
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
                directory / "moto.log", up, endpoint, env={**os.environ, **S3_CREDENTIALS},
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


@contextlib.contextmanager
def mlflow_server(directory: Path, backend: str, endpoint: str, bucket: str) -> Iterator[Part]:
    """``mlflow server`` on ``backend`` storing artifacts in ``s3://bucket/mlflow``; ``.url`` is its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **s3_env(endpoint), "MLFLOW_ENABLE_TELEMETRY": "false"}
    part = Part("mlflow server", [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
                                  "--artifacts-destination", f"s3://{bucket}/mlflow", "--host", "127.0.0.1",
                                  "--port", str(port), "--workers", "1"], directory / "mlflow-server.log",
                lambda: requests.get(f"{url}/health", timeout=2).status_code == 200, url, env=env)
    with running(part):
        yield part


@contextlib.contextmanager
def shared_stack(root: Path, bucket: str) -> Iterator[dict]:
    """PostgreSQL, the S3 store with ``bucket`` and an MLflow server on both.

    Yields their URLs (``url``: MLflow, ``endpoint``: S3) and the parts themselves (``parts``:
    ``postgres``, ``s3``, ``mlflow``), which a test may stop and start.
    """
    with postgres(root / "pg") as database, s3(root / "s3", bucket) as store, \
            mlflow_server(root / "mlflow", database.url, store.url, bucket) as tracking:
        yield {"url": tracking.url, "endpoint": store.url,
               "parts": {"postgres": database, "s3": store, "mlflow": tracking}}
