"""A dask.distributed cluster started as an operator starts one: ``dask scheduler`` and ``dask worker``.

The command lines are those of deploy/k8s/dask/ (a scheduler, single-process workers with a
memory limit and a scratch folder), on loopback. The pipeline reaches it through
``DASK_SCHEDULER_ADDRESS``, as it would a remote cluster: the workers are separate processes that
import the project from ``PYTHONPATH`` and read and write the stages' files by absolute path.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port
from tests.support.team import BIN, Part, running


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _workers_at(address: str) -> int:
    from distributed import Client

    with Client(address, timeout="5s") as client:
        return len(client.scheduler_info()["workers"])


@contextlib.contextmanager
def dask_cluster(directory: Path, workers: int, project: Path, memory_limit: str = "2GiB") -> Iterator[str]:
    """A scheduler and ``workers`` worker processes importing the project at ``project``; yields the address."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = Part("dask scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                        "--no-dashboard"],
                     directory / "scheduler.log", lambda: _listening(port), address)
    env = {"PYTHONPATH": str(project), "HOME": str(directory)}
    parts = [Part(f"dask worker {i}", [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--memory-limit", memory_limit, "--local-directory", str(directory / "scratch"),
                                       "--no-dashboard", "--name", f"worker-{i}"],
                  directory / f"worker-{i}.log", lambda i=i: _workers_at(address) > i, address, env=env)
             for i in range(workers)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(scheduler))
        for part in parts:   # one at a time: each is ready once the scheduler counts it
            stack.enter_context(running(part))
        yield address
