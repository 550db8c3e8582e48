"""The Dask engine (``train.engine: dask``): the cluster the stages use, and partitioned data on disk.

One setting chooses the cluster: ``DASK_SCHEDULER_ADDRESS`` (``tcp://host:8786``) connects to an
existing dask.distributed scheduler (deploy/k8s/dask/ runs one); unset, each stage starts a
``LocalCluster`` of worker processes on this machine, ``DASK_LOCAL_WORKERS`` of them (default:
the CPU count) with ``DASK_WORKER_MEMORY`` each (default: an equal share of the machine), spilling
to disk beyond it. Workers read and write the stages' files by absolute path (never relative to a
working directory, which is theirs), so on a remote cluster the workspace must be mounted at the
same path on every worker (a shared volume).

Partitioned datasets keep the single-process paths (``data/validated/data.parquet``,
``data/features/train.parquet``, ...) as directories of ``part-NNNNN.parquet`` files, so
dvc.yaml, ``pandas.read_parquet`` and ``dask.dataframe.read_parquet`` read either engine's output.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.core.io import sha256_of

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

PART_NAME = "part-{:05d}.parquet"


@dataclass(frozen=True)
class DaskSettings:
    """Where the Dask engine runs, read once from the environment."""

    scheduler_address: str | None
    local_workers: int
    worker_memory: str

    @classmethod
    def from_env(cls) -> DaskSettings:
        """``DASK_SCHEDULER_ADDRESS``, ``DASK_LOCAL_WORKERS`` and ``DASK_WORKER_MEMORY`` (see module doc)."""
        workers = os.environ.get("DASK_LOCAL_WORKERS", "").strip()
        try:
            local_workers = int(workers) if workers else (os.cpu_count() or 1)
        except ValueError as exc:
            raise ValueError(f"DASK_LOCAL_WORKERS must be a whole number, got {workers!r}") from exc
        if local_workers < 1:
            raise ValueError(f"DASK_LOCAL_WORKERS must be at least 1, got {local_workers}")
        return cls(scheduler_address=os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip() or None,
                   local_workers=local_workers,
                   worker_memory=os.environ.get("DASK_WORKER_MEMORY", "").strip() or "auto")


@contextlib.contextmanager
def dask_client(settings: DaskSettings | None = None) -> Iterator[Client]:
    """A client of the configured scheduler, or of a local cluster that lives as long as the block."""
    from distributed import Client, LocalCluster

    settings = settings or DaskSettings.from_env()
    for noisy in ("distributed", "lightgbm"):  # per-worker chatter; warnings and errors still show
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    if settings.scheduler_address:
        logger.info("dask: connecting to the scheduler at %s", settings.scheduler_address)
        with Client(settings.scheduler_address, timeout="60s") as client:
            yield client
        return
    logger.info("dask: a local cluster of %d worker processes (%s memory each)",
                settings.local_workers, settings.worker_memory)
    with LocalCluster(n_workers=settings.local_workers, threads_per_worker=1, processes=True,
                      memory_limit=settings.worker_memory, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def fresh_directory(path: Path) -> Path:
    """``path`` as a new, empty directory (a file or directory there before is removed)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.mkdir(parents=True)
    return path


def dataset_parts(path: Path) -> list[Path]:
    """The parquet files of a dataset path, absolute (workers have working directories of their own):
    a directory's parts in name order, or the file itself."""
    path = Path(path).absolute()
    parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not parts or not parts[0].exists():
        raise FileNotFoundError(f"no parquet data at {path}")
    return parts


def dataset_sha256(path: str | Path) -> str:
    """The sha256 of a parquet file, or of a partitioned directory (its part names and their digests)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for part in sorted(path.glob("*.parquet")):
        digest.update(f"{part.name}\0{sha256_of(part)}\n".encode())
    return digest.hexdigest()
