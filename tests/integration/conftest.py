"""Fixtures shared by the integration tier's folders."""

from __future__ import annotations

from collections.abc import Iterator

import distributed
import pytest


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    """A real 2-worker dask.distributed LocalCluster (one thread each): partitions, models and
    results really travel between processes, as on a cluster."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as dask_client:
        yield dask_client
