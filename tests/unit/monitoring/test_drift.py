"""The drift job on the bundled data: a shifted population drifts, a like-reference one does not."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_template.cli import main
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.io import read_json
from mlops_template.monitoring import Settings, Window
from mlops_template.monitoring.alerts import LOG_FILE, STATE_FILE, AlertSink
from mlops_template.monitoring.drift import columns_not_sent, detect_drift, run_drift_job

REPO = Path(__file__).resolve().parents[3]
THRESHOLD = 0.2

# Evidently's imports trip deprecation warnings inside numpy and litestar: not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:evidently.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:litestar.*")]


@pytest.fixture
def reference_path(tmp_path: Path, samples: dict[str, pd.DataFrame]) -> Path:
    path = tmp_path / "reference.parquet"
    samples["reference"].to_parquet(path)
    return path


@pytest.fixture
def shifted_log(tmp_path: Path, samples, write_log) -> Path:
    return write_log(tmp_path / "shifted-log", samples["shifted"])


@pytest.fixture
def like_log(tmp_path: Path, samples, write_log) -> Path:
    return write_log(tmp_path / "like-log", samples["like_reference"])


def run_job(log_dir: Path, reference_path: Path, contract, report_dir: Path) -> dict:
    alerts = AlertSink(report_dir, webhook_url=None)
    return run_drift_job(log_dir, reference_path, contract, Window(last_n=5000), THRESHOLD, report_dir, alerts)


def test_shifted_population_drifts(tmp_path, shifted_log, reference_path, contract) -> None:
    report_dir = tmp_path / "reports"
    summary = run_job(shifted_log, reference_path, contract, report_dir)
    assert summary["drift_detected"] is True
    assert summary["drift_share"] > THRESHOLD
    assert {"education", "education_num"} <= set(summary["drifted_columns"])
    assert summary["rows_current"] == 3000 and summary["rows_reference"] == 3000
    # every numeric and categorical input is compared; the target is not
    expected = contract.columns_with_role("numeric") + contract.columns_with_role("categorical")
    assert list(summary["columns"]) == expected
    education = summary["columns"]["education_num"]
    assert education["drifted"] is True and education["score"] > education["threshold"]
    assert set(education) == {"score", "method", "drifted", "threshold"}

    saved = read_json(report_dir / "drift.json")
    assert {"window", "rows_current", "rows_reference", "drift_share", "drifted_columns", "threshold",
            "drift_detected", "columns"} <= set(saved)
    assert saved["window"]["last_n"] == 5000 and saved["window"]["first_ts"] <= saved["window"]["last_ts"]
    html = report_dir / "drift.html"
    assert html.stat().st_size > 100_000 and b"<html" in html.read_bytes()[:2000].lower()

    alerts = [json.loads(line) for line in (report_dir / LOG_FILE).read_text().splitlines()]
    assert [(a["key"], a["status"], a["delivery"]) for a in alerts] == [("drift", "firing", "logged")]

    textfile = (report_dir / "drift.prom").read_text()
    assert "model_drift_detected 1.0" in textfile
    assert f"model_drift_share {summary['drift_share']}" in textfile
    assert 'model_drift_column_score{column="education_num"}' in textfile
    assert "model_drift_last_run_timestamp_seconds" in textfile


def test_like_reference_sample_does_not_drift(tmp_path, like_log, reference_path, contract) -> None:
    report_dir = tmp_path / "reports"
    summary = run_job(like_log, reference_path, contract, report_dir)
    assert summary["drift_detected"] is False
    assert summary["drift_share"] <= THRESHOLD
    assert "education_num" not in summary["drifted_columns"]
    assert not (report_dir / LOG_FILE).exists()  # no alert, and no incident to resolve
    assert "model_drift_detected 0.0" in (report_dir / "drift.prom").read_text()


def cli(params_file: Path, log_dir: Path, reference: Path, *extra: str) -> int:
    return main(["drift", "--params", str(params_file), "--log-dir", str(log_dir),
                 "--reference", str(reference), *extra])


def test_alert_reaches_webhook_once_per_incident(
    tmp_path, params_file, shifted_log, like_log, reference_path, receiver, capsys
) -> None:
    hook = f"{receiver.url}/hook"
    receiver.fail_next = 1  # the first delivery attempt gets a 500 and is retried
    assert cli(params_file, shifted_log, reference_path, "--webhook", hook) == ExitCode.ALERT
    assert cli(params_file, shifted_log, reference_path, "--webhook", hook) == ExitCode.ALERT
    posts = receiver.posts()
    assert len(posts) == 2  # one failed attempt, one delivery; the second run is deduplicated
    payload = posts[1].json()
    assert posts[1].headers["Content-Type"] == "application/json"
    assert payload["text"].startswith("[WARNING] Data drift")
    [block] = payload["blocks"]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    assert "education_num" in block["text"]["text"] and "drift.html" in block["text"]["text"]
    assert len(block["text"]["text"]) <= 3000

    # the condition clears: the incident is resolved; drift again is a new incident
    assert cli(params_file, like_log, reference_path, "--webhook", hook) == ExitCode.OK
    assert cli(params_file, shifted_log, reference_path, "--webhook", hook) == ExitCode.ALERT
    texts = [p.json()["text"] for p in receiver.posts()[2:]]
    assert texts[0].startswith("[RESOLVED] Data drift") and texts[1].startswith("[WARNING] Data drift")
    assert len(texts) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("drift: DETECTED; share") and lines[2].startswith("drift: none;")


def test_job_survives_webhook_down(tmp_path, params_file, shifted_log, reference_path, dead_url) -> None:
    assert cli(params_file, shifted_log, reference_path, "--webhook", dead_url) == ExitCode.ALERT
    [record] = [json.loads(x) for x in (tmp_path / "reports" / LOG_FILE).read_text().splitlines()]
    assert record["delivery"] == "failed"
    assert read_json(tmp_path / "reports" / "alert-state.json") == {}  # not sent: retried next run


def test_empty_window_is_an_error(tmp_path, params_file, reference_path) -> None:
    """The real command line: nothing logged yet is an error for cron (exit 65), said in one line."""
    result = subprocess.run(
        [sys.executable, "-m", "mlops_template", "drift", "--params", str(params_file),
         "--log-dir", str(tmp_path / "no-log"), "--reference", str(reference_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr.startswith("mlops-template drift: error: no inference records"), result.stderr
    assert result.stderr.count("\n") == 1


def test_gauges_pushed_to_pushgateway_from_env(
    tmp_path, params_file, shifted_log, reference_path, receiver, monkeypatch
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_URL", receiver.url)
    assert cli(params_file, shifted_log, reference_path) == ExitCode.ALERT
    [push] = [r for r in receiver.requests if r.path == "/metrics/job/model_drift"]
    assert push.method == "PUT"
    body = push.body.decode()
    for line in ("model_drift_detected 1.0", 'model_drift_column_score{column="education_num"}',
                 "model_drift_share ", "model_drift_last_run_timestamp_seconds "):
        assert line in body
    assert body == (tmp_path / "reports" / "drift.prom").read_text()


# --- minimum window: a handful of records is noise, reported but never alerted on ---------------


def with_min_window(params_file: Path, records: int) -> Path:
    """The test params with ``monitoring.min_window_records`` set to ``records``."""
    params = yaml.safe_load(params_file.read_text())
    params["monitoring"]["min_window_records"] = records
    params_file.write_text(yaml.safe_dump(params))
    return params_file


# Evidently's statistics on a 7-record window divide by zero inside numpy: expected, not ours.
TINY = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def alert_log(report_dir: Path) -> list[tuple[str, str]]:
    path = report_dir / LOG_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [(a["key"], a["status"]) for a in map(json.loads, lines)]


def test_settings_read_min_window_records() -> None:
    assert Settings.from_params({}).min_window_records == 500
    assert Settings.from_params({"monitoring": {"min_window_records": "20"}}).min_window_records == 20
    real = yaml.safe_load((REPO / "params.yaml").read_text())
    assert Settings.from_params(real).min_window_records == real["monitoring"]["min_window_records"]


@TINY
def test_window_below_minimum_reports_but_never_alerts(
    tmp_path, params_file, shifted_log, reference_path, receiver, caplog, capsys
) -> None:
    """7 shifted records drift on paper, but 7 < min_window_records (500): exit 0, and it says why."""
    report_dir = tmp_path / "reports"
    with caplog.at_level(logging.INFO, logger="mlops_template.monitoring"):
        code = cli(params_file, shifted_log, reference_path, "--last-n", "7",
                   "--webhook", f"{receiver.url}/hook")
    assert code == ExitCode.OK
    assert capsys.readouterr().out.startswith("drift: too few records; share ")

    saved = read_json(report_dir / "drift.json")
    reason = "window of 7 records is below monitoring.min_window_records (500)"
    assert saved["alert_suppressed"] == reason
    assert saved["drift_detected"] is False and saved["enough_records"] is False
    assert saved["min_window_records"] == 500
    assert saved["rows_current"] == 7 and saved["window"]["records"] == 7
    assert saved["drift_share"] > THRESHOLD  # would have alerted without the minimum
    assert (report_dir / "drift.html").exists()

    assert receiver.posts() == [] and alert_log(report_dir) == []
    warnings = [r for r in caplog.records
                if r.levelno >= logging.WARNING and "min_window_records" in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [f"{reason}: no alert decision"]

    textfile = (report_dir / "drift.prom").read_text()
    for line in ("model_drift_detected 0.0", "model_drift_window_records 7.0",
                 "model_drift_min_window_records 500.0", "model_drift_alert_suppressed 1.0",
                 'model_drift_column_score{column="education_num"}',
                 "model_drift_last_run_timestamp_seconds "):
        assert line in textfile
    # the share that the ModelDataDrift rule reads is left out, as quality leaves out its drop fraction
    assert not re.search(r"^model_drift_share ", textfile, re.MULTILINE)


@TINY
def test_window_at_minimum_alerts_as_before(
    tmp_path, params_file, shifted_log, reference_path, capsys
) -> None:
    """The same 7 records with min_window_records 7: the job alerts (exit 3) as it always did."""
    with_min_window(params_file, 7)
    assert cli(params_file, shifted_log, reference_path, "--last-n", "7") == ExitCode.ALERT
    assert capsys.readouterr().out.startswith("drift: DETECTED; share")
    report_dir = tmp_path / "reports"
    saved = read_json(report_dir / "drift.json")
    assert saved["drift_detected"] is True and saved["enough_records"] is True
    assert saved["alert_suppressed"] is None and saved["rows_current"] == 7
    assert alert_log(report_dir) == [("drift", "firing")]
    textfile = (report_dir / "drift.prom").read_text()
    assert f"model_drift_share {saved['drift_share']}" in textfile
    assert "model_drift_detected 1.0" in textfile and "model_drift_alert_suppressed 0.0" in textfile
    assert "model_drift_window_records 7.0" in textfile


@TINY
def test_window_below_minimum_does_not_resolve_an_open_incident(
    tmp_path, params_file, shifted_log, like_log, reference_path
) -> None:
    """A small quiet window is no evidence that the drift is over (as with quality's min_labelled)."""
    report_dir = tmp_path / "reports"
    assert cli(params_file, shifted_log, reference_path) == ExitCode.ALERT
    assert cli(params_file, like_log, reference_path, "--last-n", "7") == ExitCode.OK
    assert alert_log(report_dir) == [("drift", "firing")]
    assert "drift" in read_json(report_dir / STATE_FILE)
    assert cli(params_file, like_log, reference_path) == ExitCode.OK  # a full quiet window resolves
    assert alert_log(report_dir) == [("drift", "firing"), ("drift", "resolved")]


# --- columns the clients never send ----------------------------------------------------------------


def test_columns_not_sent(contract, samples) -> None:
    frame = samples["like_reference"].head(20).drop(columns=["fnlwgt"])
    frame["education"] = None
    frame.loc[frame.index[::2], "occupation"] = None  # partly null: still sent
    assert columns_not_sent(frame, contract) == ["fnlwgt", "education"]
    assert columns_not_sent(samples["like_reference"], contract) == []


@pytest.mark.parametrize("population, drifts", [("like_reference", False), ("shifted", True)])
def test_never_sent_columns_are_excluded_and_listed(
    tmp_path, samples, write_log, reference_path, contract, population, drifts
) -> None:
    """fnlwgt (dropped by featurize) is never sent and education always null: neither counts as
    drifted, both are listed; occupation and age, null in part of the window, are still compared."""
    frame = samples[population].copy()
    frame["education"] = None
    frame.loc[frame.index[::2], "occupation"] = None
    frame.loc[frame.index[::3], "age"] = np.nan
    log_dir = write_log(tmp_path / "log", frame, omit=("fnlwgt",))
    report_dir = tmp_path / "reports"
    summary = run_job(log_dir, reference_path, contract, report_dir)

    assert summary["columns_not_sent"] == ["fnlwgt", "education"]
    compared = contract.columns_with_role("numeric") + contract.columns_with_role("categorical")
    expected = [c for c in compared if c not in ("fnlwgt", "education")]
    assert list(summary["columns"]) == expected
    assert summary["columns"]["occupation"]["score"] is not None
    assert summary["columns"]["age"]["score"] is not None
    assert not {"fnlwgt", "education"} & set(summary["drifted_columns"])
    assert summary["drift_share"] == round(len(summary["drifted_columns"]) / len(expected), 6)
    assert summary["drift_detected"] is drifts
    if drifts:
        assert "education_num" in summary["drifted_columns"]

    assert read_json(report_dir / "drift.json")["columns_not_sent"] == ["fnlwgt", "education"]
    textfile = (report_dir / "drift.prom").read_text()
    assert 'column="fnlwgt"' not in textfile and 'column="education"' not in textfile
    assert 'model_drift_column_score{column="occupation"}' in textfile


def test_no_drift_column_sent_is_an_error(contract, samples) -> None:
    numeric, categorical = contract.columns_with_role("numeric"), contract.columns_with_role("categorical")
    current = samples["like_reference"].head(50).drop(columns=[*numeric, *categorical])
    with pytest.raises(ValueError, match="no drift column is sent"):
        detect_drift(current, samples["reference"], contract, THRESHOLD)
