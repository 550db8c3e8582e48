"""The single-process path refuses data it cannot hold, estimated from the raw files, before reading them.

The memory readers take their paths, so fake ``/proc/meminfo`` and cgroup trees (v2 and v1) are
plain files here; the real machine's files are read once too.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mlops_template.pipeline.capacity import (
    BASE_PEAK_BYTES,
    MEMORY_LIMIT_ENV,
    PEAK_BYTES_PER_CSV_BYTE,
    DataTooLargeError,
    available_memory_bytes,
    cgroup_available,
    check_single_process_fits,
    estimated_peak_bytes,
    gzip_uncompressed_size,
    meminfo_available,
)
from mlops_template.pipeline.validation import DataValidationError

REPO = Path(__file__).resolve().parents[3]
GIB = 2**30
HEADER = "age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,race,sex," \
         "capital_gain,capital_loss,hours_per_week,native_country,income\n"
ROW = "39,State-gov,77516,Bachelors,13,Never-married,Adm-clerical,Not-in-family,White,Male,2174,0,40," \
      "United-States,<=50K\n"


def meminfo(tmp_path: Path, available_kb: int | None) -> Path:
    lines = ["MemTotal:       24684568 kB", "MemFree:        20991780 kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    path = tmp_path / "meminfo"
    path.write_text("\n".join(lines + ["Buffers:          123456 kB"]) + "\n")
    return path


def cgroup_v2(tmp_path: Path, limit: str, current: int, inactive_file: int = 0) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    (root / "memory.max").write_text(limit + "\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.stat").write_text(f"anon 1000\nfile 5000\ninactive_file {inactive_file}\nactive_file 10\n")
    return root


def cgroup_v1(tmp_path: Path, limit: int, usage: int, inactive_file: int = 0) -> Path:
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    (root / "memory/memory.limit_in_bytes").write_text(f"{limit}\n")
    (root / "memory/memory.usage_in_bytes").write_text(f"{usage}\n")
    (root / "memory/memory.stat").write_text(f"cache 10\ntotal_inactive_file {inactive_file}\n")
    return root


def csv_of(rows: int) -> str:
    return HEADER + ROW * rows


def test_mem_available_is_read_in_bytes(tmp_path):
    assert meminfo_available(meminfo(tmp_path, 8_000_000)) == 8_000_000 * 1024
    assert meminfo_available(meminfo(tmp_path, None)) is None
    assert meminfo_available(tmp_path / "absent") is None


def test_cgroup_v2_room_is_the_limit_minus_usage_without_reclaimable_cache(tmp_path):
    root = cgroup_v2(tmp_path, str(4 * GIB), current=3 * GIB, inactive_file=GIB)
    assert cgroup_available(root) == 2 * GIB


def test_cgroup_v2_without_a_limit_is_no_limit(tmp_path):
    assert cgroup_available(cgroup_v2(tmp_path, "max", current=GIB)) is None


def test_cgroup_v1_limit_and_its_no_limit_sentinel(tmp_path):
    assert cgroup_available(cgroup_v1(tmp_path / "a", 6 * GIB, usage=2 * GIB, inactive_file=GIB // 2)) \
        == int(4.5 * GIB)
    assert cgroup_available(cgroup_v1(tmp_path / "b", 9223372036854771712, usage=GIB)) is None
    assert cgroup_available(tmp_path / "no-cgroup-here") is None


def test_available_memory_is_the_smaller_of_the_kernel_and_the_container(tmp_path):
    info = meminfo(tmp_path, 20 * 1024 * 1024)  # 20 GiB free on the machine...
    root = cgroup_v2(tmp_path, str(8 * GIB), current=GIB)  # ...but the container may use 7 more
    assert available_memory_bytes(info, root, environ={}) == 7 * GIB
    roomy = cgroup_v2(tmp_path / "roomy", str(64 * GIB), current=GIB)
    assert available_memory_bytes(info, roomy, environ={}) == 20 * GIB


def test_the_operator_override_wins_and_must_be_a_number(tmp_path):
    info = meminfo(tmp_path, 20 * 1024 * 1024)
    assert available_memory_bytes(info, tmp_path, environ={MEMORY_LIMIT_ENV: str(GIB)}) == GIB
    for bad in ("2G", "-5", "0"):
        with pytest.raises(ValueError, match=MEMORY_LIMIT_ENV):
            available_memory_bytes(info, tmp_path, environ={MEMORY_LIMIT_ENV: bad})
    with pytest.raises(RuntimeError, match=MEMORY_LIMIT_ENV):
        available_memory_bytes(tmp_path / "absent", tmp_path / "absent", environ={})


def test_this_machine_reports_some_memory(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < available_memory_bytes() <= total


def test_gzip_size_is_the_uncompressed_size_of_every_member(tmp_path):
    text = csv_of(2000).encode()
    single = tmp_path / "one.csv.gz"
    single.write_bytes(gzip.compress(text))
    assert gzip_uncompressed_size(single) == len(text)
    # Two members (e.g. `cat a.csv.gz b.csv.gz`): the trailer's ISIZE holds only the last one's size.
    double = tmp_path / "two.csv.gz"
    double.write_bytes(gzip.compress(text) + gzip.compress(text[:1000]))
    assert gzip_uncompressed_size(double) == len(text) + 1000
    # A small file that expands a lot is counted in full, without holding it in memory.
    bomb = tmp_path / "zeros.csv.gz"
    bomb.write_bytes(gzip.compress(b"0" * (64 * 2**20), compresslevel=9))
    assert bomb.stat().st_size < 2**20 and gzip_uncompressed_size(bomb) == 64 * 2**20


def test_the_estimate_is_linear_in_the_csv_bytes_compressed_or_not(tmp_path):
    text = csv_of(5000)
    plain, packed = tmp_path / "a.csv", tmp_path / "b.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert estimated_peak_bytes([plain]) == estimated_peak_bytes([packed]) \
        == BASE_PEAK_BYTES + round(len(text) * PEAK_BYTES_PER_CSV_BYTE)
    assert estimated_peak_bytes([plain, packed]) - BASE_PEAK_BYTES \
        == pytest.approx(2 * (estimated_peak_bytes([plain]) - BASE_PEAK_BYTES), abs=1)


def test_the_estimate_covers_the_measured_peaks():
    """Peaks measured with benchmarks/scale.py (single engine, 2026-12-03: 50k, 1M, 3M generated rows,
    CSV bytes and peak RSS of the largest process) and the issue's (1M rows 1.87 GB, 3M rows 4.95 GB,
    about 109 CSV bytes a row): the estimate is never below one (an underestimate gets the process
    killed) and not far above (an overestimate refuses data that fits)."""
    measured = [(5_455_578, 416.9 * 2**20), (109_106_210, 1841.6 * 2**20), (327_276_843, 4807.3 * 2**20),
                (1_000_000 * 109, 1.87e9), (3_000_000 * 109, 4.95e9)]
    for csv_size, peak in measured:
        estimate = BASE_PEAK_BYTES + csv_size * PEAK_BYTES_PER_CSV_BYTE
        assert peak <= estimate <= 1.15 * peak, (csv_size, estimate / peak)


def test_data_too_large_is_refused_naming_the_dask_engine(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "batch-1.csv.gz").write_bytes(gzip.compress(csv_of(20_000).encode()))
    needed = estimated_peak_bytes([raw / "batch-1.csv.gz"])
    with pytest.raises(DataTooLargeError) as caught:
        check_single_process_fits(raw, headroom=0.1, available=needed)  # 10% headroom: no longer fits
    message = str(caught.value)
    assert "train.engine: dask" in message and "DASK_SCHEDULER_ADDRESS" in message
    assert f"{needed / GIB:.2f} GiB" in message and str(raw) in message
    check_single_process_fits(raw, headroom=0.1, available=int(needed / 0.9) + 1)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(needed // 2))  # the operator's figure, when no value is passed
    with pytest.raises(DataTooLargeError, match="train.engine: dask"):
        check_single_process_fits(raw)


def test_the_bundled_data_fits_on_this_machine(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    check_single_process_fits(REPO / "data" / "raw")


def test_a_wrong_headroom_or_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="headroom"):
        check_single_process_fits(tmp_path, headroom=1.5, available=GIB)
    with pytest.raises(DataValidationError, match="does not exist"):
        check_single_process_fits(tmp_path / "nothing.csv", available=GIB)
