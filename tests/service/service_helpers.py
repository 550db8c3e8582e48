"""Shared by the service tests: a small trained model, free ports, server start and stop.

The model is a logistic regression on the first rows of the bundled data, packaged by each
test module into its own temporary BentoML home.
"""

from __future__ import annotations

import json
import os
import subprocess
import socket
import time
from pathlib import Path

import pandas as pd
import requests

from mlops_template.contract import load_contract
from mlops_template.features import build_features, feature_spec_from
from mlops_template.model import build_pipeline, save_model
from mlops_template.validation import validate_file

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "contracts" / "adult.yaml"
RAW = REPO / "data" / "raw" / "adult.csv.gz"
THRESHOLD = 0.4
TRAIN_ROWS = 4000
TEST_ROWS = 200
STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_small_model(model_dir: Path) -> tuple[pd.DataFrame, object, object]:
    """Train a small logistic regression; return held-out rows, the pipeline and the spec."""
    contract = load_contract(CONTRACT)
    valid = validate_file(RAW, contract).valid
    derived = {"capital_net": "capital_gain - capital_loss"}
    spec = feature_spec_from(contract, ["fnlwgt", "education"], derived)
    train = valid.iloc[:TRAIN_ROWS]
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, 42)
    pipeline.fit(build_features(train, spec), train[contract.target])
    save_model(pipeline, model_dir / "model.skops")
    spec.to_json(model_dir / "feature_spec.json")
    card = {"name": "adult-income", "estimator": "logistic_regression", "train_rows": TRAIN_ROWS}
    (model_dir / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    test = valid.iloc[TRAIN_ROWS : TRAIN_ROWS + TEST_ROWS].reset_index(drop=True)
    return test, pipeline, spec


def wait_ready(url: str, process: subprocess.Popen, path: str = "/readyz") -> None:
    """Poll ``path`` until it answers 200, failing if the server exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {process.returncode}")
        try:
            if requests.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}{path} not 200 after {STARTUP_TIMEOUT} s")


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server and its workers (it leads its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def records_of(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready records of the contract's input columns (NaN becomes null)."""
    inputs = [c.name for c in load_contract(CONTRACT).input_columns]
    return json.loads(frame[inputs].to_json(orient="records"))
