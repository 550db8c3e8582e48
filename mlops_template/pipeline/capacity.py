"""Will the single-process pipeline fit in memory? Refuse data it cannot hold, before it is killed.

The single-process path (``train.engine: single``) holds the whole data set in one process, several
times over (raw strings, typed frame, features, the model's binned matrix). Its peak grows
linearly with the raw CSV's size, so it can be estimated from the raw files alone, before any
of them is read, and compared with the memory this process may use: the smaller of the kernel's
``MemAvailable`` and what the cgroup (a container's memory limit) still allows. Data that would
not fit stops the pipeline with a message naming ``train.engine: dask`` instead of the kernel's
OOM killer ending it half way, with nothing said.

The factor was measured on this pipeline (``benchmarks/scale.py``): the peak RSS of the largest
process of ``dvc repro`` against the uncompressed bytes of the raw CSVs, at two sizes (see
:data:`PEAK_BYTES_PER_CSV_BYTE`). It holds for the default estimator; another one (a 200-tree
random forest) can need more, so the check leaves headroom and can be overridden.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlops_template.pipeline.validation import raw_files

logger = logging.getLogger(__name__)

#: Peak resident memory of the single-process ``dvc repro`` per uncompressed byte of raw CSV, and
#: the part that does not grow with the data (interpreter, pandas, scikit-learn), both rounded up.
#: Measured with benchmarks/scale.py (hist_gradient_boosting, the train stage peaks): 50,000
#: generated Adult rows (5,455,578 CSV bytes) peaked at 416.9 MiB, 1,000,000 rows (109,106,210
#: bytes, 109 per row) at 1,841.6 MiB: slope 14.41 bytes per CSV byte, intercept 342 MiB; 3,000,000
#: rows (327,276,843 bytes) at 4,807.3 MiB (estimate 4,876 MiB, +1.4%). The issue's own runs
#: (1M rows 1.87 GB, 3M rows 4.95 GB) fall just under this line too.
PEAK_BYTES_PER_CSV_BYTE = 14.5
BASE_PEAK_BYTES = 350 * 2**20
#: Share of the available memory the run may not use: the rest stays for the page cache, the
#: other processes and the estimate's error.
DEFAULT_HEADROOM = 0.15
#: Set to a number of bytes to use instead of the measured available memory (operators on a
#: shared machine, tests).
MEMORY_LIMIT_ENV = "MLOPS_MEMORY_LIMIT_BYTES"

MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT_V1 = 2**62  # cgroup v1 reports "no limit" as a huge page-rounded number (~2**63)
_READ_BYTES = 1 << 20


class DataTooLargeError(RuntimeError):
    """The raw data would not fit in the memory of one process: use the distributed engine."""


def meminfo_available(path: Path = MEMINFO) -> int | None:
    """``MemAvailable`` from a ``/proc/meminfo``-format file, in bytes; None when absent.

    MemAvailable is the kernel's own estimate of what can be allocated without swapping
    (free memory plus reclaimable page cache), which is what a new process can count on.
    """
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == "MemAvailable":
            number, *unit = value.split()
            return int(number) * (1024 if unit and unit[0].lower() == "kb" else 1)
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def cgroup_available(root: Path = CGROUP_ROOT) -> int | None:
    """What the cgroup's memory limit still allows, in bytes; None when there is no limit.

    cgroup v2 (``memory.max``, ``memory.current``) first, then v1 (``memory/memory.limit_in_bytes``,
    ``memory/memory.usage_in_bytes``). Usage counts the page cache, which the kernel reclaims before
    it kills anything, so inactive file pages are subtracted (as the kubelet's working set does).
    """
    limit = _read_int(root / "memory.max")  # "max" (no limit) reads as None
    if limit is not None:
        used = _read_int(root / "memory.current") or 0
        used -= _stat_value(root / "memory.stat", "inactive_file")
        return max(limit - max(used, 0), 0)
    v1 = root / "memory"
    limit = _read_int(v1 / "memory.limit_in_bytes")
    if limit is None or limit >= _NO_LIMIT_V1:
        return None
    used = _read_int(v1 / "memory.usage_in_bytes") or 0
    used -= _stat_value(v1 / "memory.stat", "total_inactive_file")
    return max(limit - max(used, 0), 0)


def available_memory_bytes(meminfo: Path = MEMINFO, cgroup_root: Path = CGROUP_ROOT,
                           environ: Mapping[str, str] | None = None) -> int:
    """Memory this process may still use: the smaller of MemAvailable and the cgroup's room.

    ``MLOPS_MEMORY_LIMIT_BYTES`` (a positive integer), when set, is used instead: an operator
    who shares the machine can promise the pipeline less than the kernel would give it.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(MEMORY_LIMIT_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) <= 0:
            raise ValueError(f"{MEMORY_LIMIT_ENV} must be a positive number of bytes, got {override!r}")
        return int(override)
    candidates = [v for v in (meminfo_available(meminfo), cgroup_available(cgroup_root)) if v is not None]
    if not candidates:
        raise RuntimeError(f"cannot tell the available memory: no {meminfo} and no cgroup limit; "
                           f"set {MEMORY_LIMIT_ENV}")
    return min(candidates)


def gzip_uncompressed_size(path: Path) -> int:
    """Exact uncompressed size of a gzip file, by streaming it through zlib (nothing kept).

    The gzip trailer's ISIZE field would be instant but holds the size modulo 2**32 and only of
    the last member: a 5 GiB CSV would read as 1 GiB, a concatenated file as its last part, both
    underestimates, which is the direction that gets a process killed. Streaming costs about
    0.9 s for 3M generated Adult rows (327 MB of CSV) here, small next to reading them into a frame.
    """
    size = 0
    decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    with path.open("rb") as handle:
        data = handle.read(_READ_BYTES)
        while data:
            size += len(decoder.decompress(data, _READ_BYTES))
            data = decoder.unconsumed_tail
            if decoder.eof:  # a multi-member file: the next member starts in unused_data
                data, decoder = decoder.unused_data, zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            if not data:
                data = handle.read(_READ_BYTES)
    return size


def csv_bytes(path: Path) -> int:
    """Uncompressed bytes of one raw CSV (``.csv`` or ``.csv.gz``)."""
    return gzip_uncompressed_size(path) if path.name.endswith(".gz") else path.stat().st_size


def estimated_peak_bytes(raw_files: Sequence[Path]) -> int:
    """Estimated peak resident memory of the single-process pipeline on these raw files.

    Linear in the uncompressed CSV bytes (:data:`PEAK_BYTES_PER_CSV_BYTE`) plus what does not
    grow with the data (:data:`BASE_PEAK_BYTES`), both measured on this pipeline.
    """
    total = sum(csv_bytes(Path(p)) for p in raw_files)
    return BASE_PEAK_BYTES + math.ceil(total * PEAK_BYTES_PER_CSV_BYTE)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_single_process_fits(raw: str | Path, headroom: float = DEFAULT_HEADROOM,
                              available: int | None = None) -> None:
    """Raise :class:`DataTooLargeError` when the raw data would not fit in one process.

    ``raw`` is ``data.raw`` (a file or a folder of ``*.csv``/``*.csv.gz``). The run is refused
    when the estimated peak exceeds ``(1 - headroom)`` of the available memory
    (:func:`available_memory_bytes` unless ``available`` is given). The message says how much is
    needed, how much there is, and to set ``train.engine: dask``.
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    files = raw_files(raw)
    needed = estimated_peak_bytes(files)
    have = available_memory_bytes() if available is None else available
    usable = int(have * (1 - headroom))
    logger.info("single-process estimate: peak %s for %s; %s available, %s usable",
                _gib(needed), raw, _gib(have), _gib(usable))
    if needed > usable:
        raise DataTooLargeError(
            f"the raw data in {raw} ({len(files)} file(s)) needs about {_gib(needed)} in one process "
            f"(estimated from its CSV size), but only {_gib(have)} is available ({_gib(usable)} after "
            f"{headroom:.0%} headroom). Set `train.engine: dask` in params.yaml to run the pipeline "
            f"out of core on Dask (and DASK_SCHEDULER_ADDRESS=tcp://HOST:8786 to use a cluster), or "
            f"{MEMORY_LIMIT_ENV} to state the memory this machine may use.")
