"""The inference log keeps every record: across restarts, processes, threads and rotation."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlops_template.serving.inference_log import InferenceLog, read_log


def entries(prefix: str, n: int, **extra) -> list[dict]:
    return [
        {"request_id": f"{prefix}-{i // 3}", "record_index": i % 3, "model_version": "m:1",
         "features": {"age": 30 + i % 50, "sex": "Female" if i % 2 else "Male"},
         "probability": (i % 100) / 100, "label": ">50K" if i % 100 >= 50 else "<=50K", **extra}
        for i in range(n)
    ]


def assert_complete(frame, expected_keys: set[tuple[str, int]]) -> None:
    keys = list(zip(frame["request_id"], frame["record_index"], strict=True))
    assert len(keys) == len(expected_keys)
    assert set(keys) == expected_keys


def keys_of(batch: list[dict]) -> set[tuple[str, int]]:
    return {(e["request_id"], e["record_index"]) for e in batch}


def test_entries_round_trip_with_features_flattened(tmp_path: Path) -> None:
    batch = entries("a", 6)
    batch[0]["ts"] = "2020-01-01T00:00:00+00:00"
    with InferenceLog(tmp_path) as log:
        log.submit(batch)
    frame = read_log(tmp_path)
    assert list(frame.columns[:6]) == ["ts", "request_id", "record_index", "model_version",
                                       "probability", "label"]
    assert {"age", "sex"} <= set(frame.columns)
    assert frame["ts"].is_monotonic_increasing
    assert frame["ts"].iloc[0] == datetime(2020, 1, 1, tzinfo=UTC)  # a given ts is kept
    assert (frame["ts"].iloc[1:] > datetime.now(UTC) - timedelta(minutes=1)).all()  # added
    assert frame.loc[frame["request_id"] == "a-1", "age"].tolist() == [33, 34, 35]
    assert "ts" not in batch[1]  # the caller's dicts are not modified


def test_threads_and_restart_keep_every_record(tmp_path: Path) -> None:
    first = [entries(f"t{t}", 300) for t in range(4)]
    log = InferenceLog(tmp_path)

    def submit_all(batch: list[dict]) -> None:
        for start in range(0, len(batch), 10):
            log.submit(batch[start:start + 10])

    threads = [threading.Thread(target=submit_all, args=(batch,)) for batch in first]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    with InferenceLog(tmp_path) as reopened:  # a restart: same directory, appended to
        reopened.submit(entries("after", 90))
    expected = set().union(*(keys_of(b) for b in first), keys_of(entries("after", 90)))
    assert_complete(read_log(tmp_path), expected)


def _write_from_process(directory: str, prefix: str, n: int) -> None:
    batch = entries(prefix, n)
    with InferenceLog(Path(directory)) as log:
        for start in range(0, n, 7):
            log.submit(batch[start:start + 7])


def test_two_processes_write_concurrently_without_interleaving(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_from_process, args=(str(tmp_path), f"p{i}", 3000))
                 for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    files = sorted(tmp_path.glob("inference-*.jsonl"))
    assert len(files) == 2  # one file per process
    for path in files:  # every line is one whole JSON record
        assert all(line.startswith("{") and line.endswith("}") for line in path.read_text().splitlines())
    assert_complete(read_log(tmp_path), keys_of(entries("p0", 3000)) | keys_of(entries("p1", 3000)))


def test_truncated_last_line_is_skipped_and_not_glued_to_the_next(tmp_path: Path) -> None:
    with InferenceLog(tmp_path) as log:
        log.submit(entries("a", 10))
    path = next(tmp_path.glob("inference-*.jsonl"))
    with open(path, "ab") as fh:  # a crash in the middle of a line
        fh.write(b'{"ts":"2025-01-01T00:00:00+00:00","request_id":"cut')
    assert len(read_log(tmp_path)) == 10
    with InferenceLog(tmp_path) as log:  # restarted with the same pid, e.g. pid 1 in a container
        log.submit(entries("b", 5))
    assert_complete(read_log(tmp_path), keys_of(entries("a", 10)) | keys_of(entries("b", 5)))


def test_rotation_by_size_keeps_all_records_readable(tmp_path: Path) -> None:
    batch = entries("r", 2000)
    with InferenceLog(tmp_path, max_bytes=20_000, backup_count=100) as log:
        for start in range(0, 2000, 50):
            log.submit(batch[start:start + 50])
            time.sleep(0.002)  # let the writer take several batches
    files = list(tmp_path.glob("inference-*.jsonl*"))
    assert len(files) > 5
    assert_complete(read_log(tmp_path), keys_of(entries("r", 2000)))
    frame = read_log(tmp_path, last_n=100)  # the newest records, read from the newest files
    assert len(frame) == 100 and frame["ts"].is_monotonic_increasing


def test_rotation_bounds_disk_use_by_backup_count(tmp_path: Path) -> None:
    batch = entries("r", 1000)
    with InferenceLog(tmp_path, max_bytes=5_000, backup_count=2) as log:
        for start in range(0, 1000, 20):
            log.submit(batch[start:start + 20])
            time.sleep(0.002)
    assert len(list(tmp_path.glob("inference-*.jsonl*"))) == 3


def test_overflow_drops_counts_and_never_blocks(tmp_path: Path, monkeypatch) -> None:
    dropped: list[int] = []
    log = InferenceLog(tmp_path, buffer_size=5, on_drop=dropped.append)
    write = log._write

    def slow_write(lines: list[str]) -> None:
        time.sleep(0.05)
        write(lines)

    monkeypatch.setattr(log, "_write", slow_write)
    batch = entries("o", 400)
    started = time.perf_counter()
    for start in range(0, 400, 4):
        log.submit(batch[start:start + 4])
    elapsed = time.perf_counter() - started
    log.close()
    assert elapsed < 0.5  # 100 submits against a writer needing 50 ms per batch
    assert sum(dropped) > 0
    assert len(read_log(tmp_path)) + sum(dropped) == 400


def test_submit_after_close_drops_without_raising(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = InferenceLog(tmp_path, on_drop=dropped.append)
    log.close()
    log.submit(entries("late", 3))
    assert dropped == [3]


def test_read_log_window_filters(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    batch = entries("w", 10)
    for i, entry in enumerate(batch):
        entry["ts"] = (start + timedelta(minutes=i)).isoformat()
    with InferenceLog(tmp_path) as log:
        log.submit(batch[5:])
        log.submit(batch[:5])
    assert read_log(tmp_path / "missing").empty
    assert read_log(tmp_path, last_n=3)["ts"].dt.minute.tolist() == [7, 8, 9]
    window = read_log(tmp_path, since=start + timedelta(minutes=2), until=start + timedelta(minutes=6))
    assert window["ts"].dt.minute.tolist() == [2, 3, 4, 5]
