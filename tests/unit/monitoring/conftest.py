"""Shared fixtures for the monitoring tests: bundled data samples, a local webhook receiver."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_template.core.contract import Contract, load_contract
from mlops_template.pipeline.validation import validate_file
from mlops_template.serving.inference_log import InferenceLog
from tests.support.webhook import Receiver, receiving

REPO = Path(__file__).resolve().parents[3]
CONTRACT_PATH = REPO / "contracts/adult.yaml"
RAW_PATH = REPO / "data/raw/adult.csv.gz"
SHIFTED_EDUCATION = ("Bachelors", "Masters", "Doctorate")
SAMPLE_ROWS = 3000


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as state:
        yield state


@pytest.fixture
def dead_url() -> str:
    """A URL on a local port where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(CONTRACT_PATH)


@pytest.fixture(scope="session")
def samples(contract: Contract) -> dict[str, pd.DataFrame]:
    """Disjoint samples of the validated bundled data.

    ``reference`` is a random sample; ``like_reference`` is another random sample of the other
    rows; ``shifted`` holds only degree holders (education in Bachelors, Masters, Doctorate).
    """
    rows = validate_file(RAW_PATH, contract).valid.sample(frac=1.0, random_state=0)
    reference, pool = rows.iloc[:SAMPLE_ROWS], rows.iloc[SAMPLE_ROWS:]
    like = pool.sample(SAMPLE_ROWS, random_state=1)
    shifted = pool[pool["education"].isin(SHIFTED_EDUCATION)].sample(SAMPLE_ROWS, random_state=2)
    return {"reference": reference, "like_reference": like, "shifted": shifted}


def log_entries(
    frame: pd.DataFrame, contract: Contract, prefix: str = "req", omit: Collection[str] = ()
) -> list[dict]:
    """One inference-log entry per row, features as a client would send them (but ``omit``)."""
    inputs = [c.name for c in contract.input_columns if c.name not in omit]
    features = frame[inputs].astype(object).where(frame[inputs].notna(), None).to_dict("records")
    return [
        {"request_id": f"{prefix}-{i}", "record_index": 0, "model_version": "test:1",
         "features": row, "probability": 0.5, "label": "<=50K"}
        for i, row in enumerate(features)
    ]


@pytest.fixture
def write_log(contract: Contract) -> Callable[..., Path]:
    """Write rows of the bundled data as an inference log in ``directory``, without ``omit``."""

    def write(directory: Path, frame: pd.DataFrame, omit: Collection[str] = ()) -> Path:
        with InferenceLog(directory) as log:
            log.submit(log_entries(frame, contract, omit=omit))
        return directory

    return write


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A params.yaml for the CLI: the real contract and value matrix, monitoring under tmp_path."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["contract"] = str(CONTRACT_PATH)
    params["monitoring"] = {
        "inference_log_dir": str(tmp_path / "log"),
        "window_records": 5000,
        "min_window_records": 500,
        "drift_share_threshold": 0.2,
        "quality_drop_fraction": 0.2,
        "quality_min_labelled": 100,
        "report_dir": str(tmp_path / "reports"),
        "alert_dedup_hours": 6,
        "pushgateway_url": "",
        "webhook_url": "",
        # not the workspace's champion and metrics: a test names the model package it means
        "model_package": "",
        "importance": "",
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(autouse=True)
def _no_monitoring_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's Pushgateway and webhook settings must not leak into tests."""
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
