"""The service's settings: read from the environment once, typed, validated at start-up.

========================  =============  ====================================================================
``MODEL_TAG``             (unset)        model to serve outside a bento (a bento pins its own model)
``MODEL_NAME``            adult-income   without ``MODEL_TAG``: serve ``<MODEL_NAME>:latest`` from the store
``MAX_RECORDS``           1000           records per request (more: 400 ``too_many_records``)
``MAX_BODY_BYTES``        1048576        request body size (more: 413 ``body_too_large``, not read in full)
``MAX_CONCURRENCY``       64             ``/predict`` requests in progress per worker (more: fast 503)
``REQUEST_TIMEOUT``       10             seconds before BentoML answers 504 (``traffic.timeout``); also how long
                                         a response write may stall on a client that does not read
``BODY_TIMEOUT``          5              seconds a request body may take to arrive (more: 408 ``body_timeout``)
``WORKERS``               1              worker processes
``BATCHING``              on             ``off`` scores each request on its own (for benchmarks)
``BATCH_MAX_RECORDS``     1000           most records scored in one model call
``BATCH_WAIT_MS``         1              how long a batch waits for more requests once the first arrived
``OMP_NUM_THREADS``       (1)            native (OpenMP/BLAS) threads per worker; unset: one
``SCORER``                auto           ``auto``: the numpy replay of the pipeline when it passes its check
                                         (:mod:`mlops_template.serving.scoring`); ``pipeline``: always sklearn
``LOG_PAYLOADS``          false          ``true`` logs every accepted request body (off: no payloads in logs)
``INFERENCE_LOG_DIR``     inference-log  inference-log directory, relative to the working directory
                                         (``bentoml serve TAG`` runs in the bento's dir); empty: no log
``INFERENCE_LOG``         on             ``off`` disables the inference log
``ROUTING_FILE``          (unset)        routing JSON naming champion/challenger (unset: the pinned model)
``ROUTING_URL``           (unset)        team mode: the routing document in the object store
                                         (``s3://bucket/prefix/routing.json``; wins over ``ROUTING_FILE``)
``ROUTING_POLL_SECONDS``  1              how often the routing document is checked for changes
``ROUTING_VERIFY_KEY_FILE`` (unset)      Ed25519 public key (PEM) of the deploy key: required with ``ROUTING_URL``,
                                         optional with ``ROUTING_FILE`` (read by :mod:`~mlops_template.serving.routing`)
``INFERENCE_LOG_URL``     (unset)        team mode: ship the inference log to ``s3://bucket/prefix/``
``REPLICA_ID``            (hostname)     this replica's folder under ``INFERENCE_LOG_URL``
``LOG_SHIP_SECONDS``      10             how often new inference-log lines are shipped
``LOG_SPOOL_BYTES``       500000000      local inference-log disk use (unshipped lines beyond it are lost, counted)
``API_KEYS_FILE``         (unset)        file of ``<sha256 of key> <name>`` lines: every request but ``/livez``,
                                         ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <key>``
                                         (:mod:`mlops_template.serving.auth`); unset: open, logged loudly
========================  =============  ====================================================================
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlops_template.core import objectstore
from mlops_template.serving import routing

DEFAULT_MODEL_NAME = "adult-income"
SCORERS = ("auto", "pipeline")


def _number(environ: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    """A positive number, failing loudly at start-up on a bad value."""
    value = kind(environ.get(name, default))
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean: true/1/yes/on or false/0/no/off."""
    raw = environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if raw.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ServingSettings:
    """Every setting of the service (see the table in the module docstring)."""

    model_tag: str | None = None
    model_name: str = DEFAULT_MODEL_NAME
    max_records: int = 1000
    max_body_bytes: int = 1 << 20  # 1000 full records take about 350 kB
    max_concurrency: int = 64
    request_timeout: float = 10.0
    body_timeout: float = 5.0
    workers: int = 1
    batching: bool = True
    batch_max_records: int = 1000
    batch_wait_s: float = 0.001
    scorer: str = "auto"
    log_payloads: bool = False
    inference_log_dir: Path | None = Path("inference-log")
    routing_location: str | Path | None = None
    routing_poll_seconds: float = 1.0
    inference_log_url: str | None = None
    replica_id: str = "replica"
    log_ship_seconds: float = 10.0
    log_spool_bytes: int = 500_000_000
    api_keys_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Read and check every setting; ValueError names the variable that is wrong."""
        env = os.environ if environ is None else environ
        scorer = env.get("SCORER", "auto").strip().lower()
        if scorer not in SCORERS:
            raise ValueError(f"SCORER must be auto or pipeline, got {scorer!r}")
        log_dir = env.get("INFERENCE_LOG_DIR", "inference-log")
        enabled = _flag(env, "INFERENCE_LOG", True)
        return cls(
            model_tag=env.get("MODEL_TAG") or None,
            model_name=env.get("MODEL_NAME", DEFAULT_MODEL_NAME),
            max_records=int(_number(env, "MAX_RECORDS", 1000)),
            max_body_bytes=int(_number(env, "MAX_BODY_BYTES", 1 << 20)),
            max_concurrency=int(_number(env, "MAX_CONCURRENCY", 64)),
            request_timeout=float(_number(env, "REQUEST_TIMEOUT", 10.0, float)),
            body_timeout=float(_number(env, "BODY_TIMEOUT", 5.0, float)),
            workers=int(_number(env, "WORKERS", 1)),
            batching=_flag(env, "BATCHING", True),
            batch_max_records=int(_number(env, "BATCH_MAX_RECORDS", 1000)),
            batch_wait_s=float(_number(env, "BATCH_WAIT_MS", 1.0, float)) / 1000,
            scorer=scorer,
            log_payloads=_flag(env, "LOG_PAYLOADS", False),
            inference_log_dir=Path(log_dir).resolve() if enabled and log_dir.strip() else None,
            routing_location=_routing_location(env),
            routing_poll_seconds=float(_number(env, "ROUTING_POLL_SECONDS", 1.0, float)),
            inference_log_url=_url(env, "INFERENCE_LOG_URL"),
            replica_id=_token(env, "REPLICA_ID", socket.gethostname()),
            log_ship_seconds=float(_number(env, "LOG_SHIP_SECONDS", 10.0, float)),
            log_spool_bytes=int(_number(env, "LOG_SPOOL_BYTES", 500_000_000)),
            api_keys_file=Path(env["API_KEYS_FILE"]).resolve() if env.get("API_KEYS_FILE", "").strip() else None,
        )


def _url(environ: Mapping[str, str], name: str) -> str | None:
    """An ``s3://bucket/prefix`` URL, or None when unset."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not objectstore.is_url(raw):
        raise ValueError(f"{name} must be an s3://bucket/prefix URL, got {raw!r}")
    objectstore.ObjectUrl.parse(raw)
    return raw


def _token(environ: Mapping[str, str], name: str, default: str) -> str:
    """A name safe as one path segment (letters, digits, ``.``, ``_``, ``-``)."""
    raw = environ.get(name, "").strip() or default
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", raw) or raw in (".", ".."):
        raise ValueError(f"{name} must be 1-64 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _routing_location(environ: Mapping[str, str]) -> str | Path | None:
    """``ROUTING_URL`` (team mode), else ``ROUTING_FILE``, else None (serve the pinned model)."""
    url = _url(environ, routing.URL_ENV_VAR)
    if url is not None:
        return url
    return Path(environ[routing.ENV_VAR]) if environ.get(routing.ENV_VAR) else None
