"""Process settings of a serving worker that keep latency low: the garbage collector and native threads.

Both are applied by :mod:`mlops_template.serving.service` in each worker (and by the benchmark's
constant service, so that the two are compared on equal terms).
"""

from __future__ import annotations

import gc
import logging
import os

logger = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 100, 100)  # Python's default is (700, 10, 10)


def freeze_startup_objects() -> None:
    """Keep garbage-collector pauses out of request latency.

    A full collection walks every tracked object, and a worker holds millions that live as long
    as it does (BentoML, pydantic, sklearn, the model). ``gc.freeze`` moves them out of the
    collector's view, and :data:`GC_THRESHOLDS` makes collections of what requests allocate
    rarer. Together they take the tail latency close to that with the collector off
    (``python -m benchmarks.serving`` measures it).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    logger.info("%d start-up objects frozen out of garbage collection", gc.get_freeze_count())


def limit_native_threads() -> None:
    """One OpenMP/BLAS thread per worker, unless ``OMP_NUM_THREADS`` says otherwise.

    Batches are small, and the event loop, the load balancer's health checks and other workers
    already compete for the cores, so a second native thread per model call mostly waits for a
    busy core. Scale with ``WORKERS`` instead.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
