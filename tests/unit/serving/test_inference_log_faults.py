"""A log that cannot be written (a full disk) loses entries, counts them, and says so once."""

from __future__ import annotations

import errno
import logging

from mlops_template.serving.inference_log import InferenceLog


def test_failed_writes_are_counted_and_logged_once(tmp_path, monkeypatch, caplog) -> None:
    dropped: list[int] = []
    log = InferenceLog(tmp_path, on_drop=dropped.append)

    def full_disk(lines: list[str]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log, "_write", full_disk)
    with caplog.at_level(logging.ERROR, logger="mlops_template.serving.inference_log"):
        for batch in range(5):
            log.submit([{"request_id": f"r{batch}", "n": i} for i in range(10)])
        log.close()
    assert sum(dropped) == 50
    failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback per batch
