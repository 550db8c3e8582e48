"""Live quality on labelled windows whose ROC AUC is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_template.cli import main
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.io import read_json, write_json
from mlops_template.monitoring.alerts import LOG_FILE
from mlops_template.monitoring.quality import read_ground_truth
from mlops_template.serving.inference_log import InferenceLog

N = 1000
BASELINE = {"roc_auc": 0.9, "value_per_row": 20.0}
VALUE_MATRIX = {"tp": 120.0, "fp": -30.0, "tn": 0.0, "fn": 0.0}  # as in params.yaml


def window(inverted: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (25% positive) and scores that rank them well, or the same scores reversed."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=N) < 0.25).astype(int)
    score = np.round(0.45 * y + rng.uniform(0, 0.55, size=N), 6)
    return y, (1 - score if inverted else score)


def write_window(directory: Path, y: np.ndarray, proba: np.ndarray, labels_path: Path) -> None:
    """Log the predictions (3 records per request) and write the ground truth for all but 10."""
    records = [
        {"request_id": f"r{i // 3}", "record_index": i % 3, "model_version": "m:1",
         "features": {"age": 40}, "probability": float(p), "label": ">50K" if p >= 0.5 else "<=50K"}
        for i, p in enumerate(proba)
    ]
    with InferenceLog(directory) as log:
        log.submit(records)
    truth = pd.DataFrame({"request_id": [r["request_id"] for r in records],
                          "record_index": [r["record_index"] for r in records],
                          "label": np.where(y == 1, ">50K", "<=50K")}).iloc[10:]
    unknown = pd.DataFrame({"request_id": ["never-logged"], "record_index": [0], "label": ["<=50K"]})
    truth = pd.concat([truth, unknown])
    if labels_path.suffix == ".csv":
        truth.to_csv(labels_path, index=False)
    else:
        truth.to_json(labels_path, orient="records", lines=True)


def expected_figures(y: np.ndarray, proba: np.ndarray) -> dict:
    y, proba = y[10:], proba[10:]
    decision = proba >= 0.5
    tp, fp = np.sum(decision & (y == 1)), np.sum(decision & (y == 0))
    return {"roc_auc": roc_auc_score(y, proba), "accuracy": np.mean(decision == y),
            "value_per_row": (120 * tp - 30 * fp) / len(y)}


def run_cli(tmp_path: Path, params_file: Path, labels: Path, *extra: str) -> int:
    baseline = tmp_path / "evaluation.json"
    write_json(baseline, BASELINE)
    return main(["quality", "--params", str(params_file), "--log-dir", str(tmp_path / "log"),
                 "--labels", str(labels), "--baseline", str(baseline), *extra])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_good_window_keeps_quality(tmp_path, params_file, suffix) -> None:
    y, proba = window(inverted=False)
    labels = tmp_path / f"labels{suffix}"
    write_window(tmp_path / "log", y, proba, labels)
    assert run_cli(tmp_path, params_file, labels) == ExitCode.OK
    summary = read_json(tmp_path / "reports" / "quality.json")
    expected = expected_figures(y, proba)
    assert summary["live"]["labelled_records"] == N - 10
    for name, value in expected.items():
        assert summary["live"][name] == pytest.approx(value, abs=1e-6)
    assert expected["roc_auc"] > 0.9
    assert summary["quality_drop"] is False
    assert not (tmp_path / "reports" / LOG_FILE).exists()


def test_inverted_window_drops_and_alerts(tmp_path, params_file, receiver) -> None:
    y, proba = window(inverted=True)
    good_auc = roc_auc_score(*window(inverted=False))
    labels = tmp_path / "labels.jsonl"
    write_window(tmp_path / "log", y, proba, labels)
    assert run_cli(tmp_path, params_file, labels, "--webhook", f"{receiver.url}/hook",
                   "--pushgateway", receiver.url) == ExitCode.ALERT
    summary = read_json(tmp_path / "reports" / "quality.json")
    live_auc = summary["live"]["roc_auc"]
    assert live_auc == pytest.approx(roc_auc_score(y[10:], proba[10:]), abs=1e-6)
    assert live_auc == pytest.approx(1 - good_auc, abs=0.02)  # the same ranking, reversed
    assert summary["drops"]["roc_auc"] == pytest.approx((0.9 - live_auc) / 0.9, abs=1e-6)
    assert summary["drop_fraction"] == max(summary["drops"].values()) > 0.2
    assert summary["quality_drop"] is True

    [post] = receiver.posts()
    payload = post.json()
    assert payload["text"].startswith("[CRITICAL] Live quality drop")
    assert "roc_auc live vs offline" in payload["blocks"][0]["text"]["text"]
    [push] = [r for r in receiver.requests if r.path == "/metrics/job/model_quality"]
    body = push.body.decode()
    for name in ("model_live_roc_auc", "model_live_accuracy", "model_live_value_per_row",
                 "model_live_labelled_records 990.0", "model_quality_drop_fraction"):
        assert name in body
    assert body == (tmp_path / "reports" / "quality.prom").read_text()

    # the next cron run with the same bad window does not alert again
    assert run_cli(tmp_path, params_file, labels, "--webhook", f"{receiver.url}/hook") == ExitCode.ALERT
    assert len(receiver.posts()) == 1


def test_too_few_labels_reports_without_alerting(tmp_path, params_file) -> None:
    y, proba = window(inverted=True)
    labels = tmp_path / "labels.csv"
    write_window(tmp_path / "log", y, proba, labels)
    few = pd.read_csv(labels).head(50)
    few.to_csv(labels, index=False)
    assert run_cli(tmp_path, params_file, labels) == ExitCode.OK
    summary = read_json(tmp_path / "reports" / "quality.json")
    assert summary["live"]["labelled_records"] == 50
    assert summary["enough_labels"] is False and summary["quality_drop"] is False
    textfile = (tmp_path / "reports" / "quality.prom").read_text()
    assert "model_live_labelled_records 50.0" in textfile
    assert "model_quality_drop_fraction" not in textfile  # no verdict on 50 labels


def test_no_matching_labels_and_unknown_classes_are_errors(tmp_path, params_file) -> None:
    y, proba = window(inverted=False)
    labels = tmp_path / "labels.csv"
    write_window(tmp_path / "log", y, proba, labels)
    pd.DataFrame({"request_id": ["x"], "label": ["<=50K"]}).to_csv(tmp_path / "none.csv", index=False)
    assert run_cli(tmp_path, params_file, tmp_path / "none.csv") == ExitCode.BAD_INPUT
    pd.DataFrame({"request_id": ["r1"], "label": ["rich"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert run_cli(tmp_path, params_file, tmp_path / "bad.csv") == ExitCode.BAD_INPUT


def test_ground_truth_defaults_and_corrections(tmp_path) -> None:
    path = tmp_path / "truth.jsonl"
    rows = [{"request_id": 7, "label": "<=50K"}, {"request_id": "7", "label": ">50K"},
            {"request_id": "8", "record_index": 2, "label": "<=50K"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truth = read_ground_truth(path)
    assert truth.to_dict("records") == [
        {"request_id": "7", "record_index": 0, "label": ">50K"},  # the correction wins
        {"request_id": "8", "record_index": 2, "label": "<=50K"},
    ]


def test_repeated_log_keys_are_counted_and_ambiguous_ones_left_out(tmp_path, contract, caplog) -> None:
    """Two requests logged under one id (clients' own ids, before the service made its own)
    cannot be told apart: both are left out and counted; a prediction logged twice is kept once."""
    from mlops_template.monitoring.quality import live_quality

    entry = {"record_index": 0, "model_version": "m:1", "features": {"age": 40}}
    entries = [
        {**entry, "request_id": "shared", "probability": 0.9, "label": ">50K"},
        {**entry, "request_id": "shared", "probability": 0.1, "label": "<=50K"},  # another client's request
        {**entry, "request_id": "copied", "probability": 0.8, "label": ">50K"},
        {**entry, "request_id": "copied", "probability": 0.8, "label": ">50K"},  # the same line twice
        {**entry, "request_id": "single", "probability": 0.2, "label": "<=50K", "client_request_id": "c-1"},
    ]
    with InferenceLog(tmp_path / "log") as log:
        log.submit(entries)
    from mlops_template.serving.inference_log import read_log

    frame = read_log(tmp_path / "log")
    assert frame.loc[frame["request_id"] == "single", "client_request_id"].tolist() == ["c-1"]
    truth = pd.DataFrame({"request_id": ["shared", "copied", "single"], "record_index": [0, 0, 0],
                          "label": [">50K", ">50K", "<=50K"]})
    with caplog.at_level("WARNING"):
        live = live_quality(frame, truth, contract, VALUE_MATRIX)
    assert live["labelled_records"] == 2  # copied and single
    assert live["duplicate_log_entries"] == 2 and live["ambiguous_log_records"] == 2
    assert any("left out of the join" in r.getMessage() for r in caplog.records)


def test_labels_without_record_index_are_refused_for_multi_record_requests(tmp_path, params_file,
                                                                          capsys, caplog) -> None:
    """Read as record 0, every label would join to the first record of its request: a false
    verdict. The file is refused with one line naming the column, and no traceback."""
    y, proba = window(inverted=False)
    labels = tmp_path / "labels.csv"
    write_window(tmp_path / "log", y, proba, labels)  # 3 records per request
    pd.read_csv(labels).drop(columns="record_index").to_csv(labels, index=False)
    assert run_cli(tmp_path, params_file, labels) == ExitCode.BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert "no record_index column" in line and "holds 3" in line, line
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


def test_labels_without_record_index_join_single_record_requests(tmp_path, params_file) -> None:
    records = [{"request_id": f"s{i}", "record_index": 0, "model_version": "m:1", "features": {"age": 40},
                "probability": 0.9 if i % 2 else 0.1, "label": ">50K" if i % 2 else "<=50K"} for i in range(200)]
    with InferenceLog(tmp_path / "log") as log:
        log.submit(records)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": [r["request_id"] for r in records],
                  "label": [r["label"] for r in records]}).to_csv(labels, index=False)
    assert run_cli(tmp_path, params_file, labels) == ExitCode.OK
    assert read_json(tmp_path / "reports" / "quality.json")["live"]["labelled_records"] == 200


def test_labels_that_are_not_the_contracts_classes_name_both(tmp_path, params_file, capsys) -> None:
    y, proba = window(inverted=False)
    labels = tmp_path / "labels.csv"
    write_window(tmp_path / "log", y, proba, labels)
    truth = pd.read_csv(labels)
    truth["label"] = (truth["label"] == ">50K").astype(int)  # 0/1 instead of the class names
    truth.to_csv(labels, index=False)
    assert run_cli(tmp_path, params_file, labels) == ExitCode.BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert "['0', '1']" in line and "'<=50K', '>50K'" in line, line


def test_debug_logs_the_traceback(tmp_path, params_file, caplog) -> None:
    pd.DataFrame({"request_id": ["x"], "record_index": [0], "label": ["<=50K"]}).to_csv(tmp_path / "x.csv")
    assert run_cli(tmp_path, params_file, tmp_path / "x.csv", "--debug") == ExitCode.BAD_INPUT
    assert any(r.exc_info for r in caplog.records)
