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
from collections.abc import Iterator
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


@contextlib.contextmanager
def postgres(directory: Path) -> Iterator[str]:
    """A running PostgreSQL cluster with a database ``mlflow``; yields its SQLAlchemy URL.

    The cluster lives in a folder of its own under the system temp dir (the ``postgres`` user
    cannot enter pytest's root-only folders); its log goes to ``directory``.
    """
    user = "postgres" if os.geteuid() == 0 else None
    directory.mkdir(parents=True, exist_ok=True)
    cluster = Path(tempfile.mkdtemp(prefix="mlops-template-pg-"))
    data, log = cluster / "data", directory / "postgres.log"
    if user:
        shutil.chown(cluster, user, user)
    init = subprocess.run(as_user(user, [postgres_binary("initdb"), "-D", str(data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = free_port()
    server = start_process([postgres_binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(cluster),
                     "-c", "listen_addresses=127.0.0.1"], log, user=user)
    ready = postgres_binary("pg_isready")
    try:
        wait_for(lambda: subprocess.run([ready, "-h", "127.0.0.1", "-p", str(port)],
                                        capture_output=True).returncode == 0, server, log, "postgres")
        created = subprocess.run([postgres_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                  "mlflow"], capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        stop_server(server)
        shutil.rmtree(cluster, ignore_errors=True)


@contextlib.contextmanager
def s3(directory: Path, bucket: str) -> Iterator[str]:
    """moto's S3-protocol server with ``bucket`` created; yields its endpoint URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), directory / "moto.log"
    server = start_process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log,
                    env={**os.environ, **S3_CREDENTIALS})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(endpoint, timeout=2).status_code < 500, server, log, "moto_server")
        client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        stop_server(server)


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
def mlflow_server(directory: Path, backend: str, endpoint: str, bucket: str) -> Iterator[str]:
    """``mlflow server`` on ``backend`` storing artifacts in ``s3://bucket/mlflow``; yields its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), directory / "mlflow-server.log"
    env = {**os.environ, **s3_env(endpoint), "MLFLOW_ENABLE_TELEMETRY": "false"}
    server = start_process([str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
                     "--artifacts-destination", f"s3://{bucket}/mlflow", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", "1"], log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/health", timeout=2).status_code == 200, server, log, "mlflow server")
        yield url
    finally:
        stop_server(server)


@contextlib.contextmanager
def shared_stack(root: Path, bucket: str) -> Iterator[dict[str, str]]:
    """PostgreSQL, the S3 store with ``bucket`` and an MLflow server on both; their URLs."""
    with postgres(root / "pg") as backend, s3(root / "s3", bucket) as endpoint, \
            mlflow_server(root / "mlflow", backend, endpoint, bucket) as url:
        yield {"url": url, "endpoint": endpoint}
