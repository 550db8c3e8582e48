"""Unit tests for the golden-set comparison as the evaluate stage runs it, inference log included."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mlops_template.core.contract import contract_from_dict
from mlops_template.core.params import EvaluateSection, GateSection
from mlops_template.pipeline.assessment import compare_on_golden, inference_log_sample

CONTRACT = contract_from_dict({
    "name": "toy", "target": {"column": "y", "positive": "yes"},
    "columns": {"x": {"type": "float", "role": "numeric"},
                "g": {"type": "str", "role": "categorical", "allowed": ["a", "b", "c"]},
                "y": {"type": "str", "role": "target", "allowed": ["yes", "no"]}},
})


def params(log_dir: str = "") -> dict:
    return {"evaluate": {"value_matrix": {"tp": 1.0, "fp": -0.5, "tn": 0.0, "fn": 0.0}, "slices": ["g"],
                         "min_slice_rows": 30},
            "gate": {"change_thresholds": {"roc_auc": {"direction": "higher_is_better", "absolute": -0.01}}},
            "monitoring": {"inference_log_dir": log_dir}}


def sections(p: dict) -> tuple[EvaluateSection, GateSection]:
    """The typed ``evaluate`` and ``gate`` sections the comparison reads."""
    return EvaluateSection.parse(p["evaluate"]), GateSection.parse(p["gate"])


def log_sample(p: dict) -> pd.DataFrame | None:
    """The inference-log sample as the evaluate stage draws it (gate rows, monitoring folder)."""
    rows = GateSection.parse(p["gate"]).answer_changes.inference_log_rows
    return inference_log_sample(rows, p["monitoring"]["inference_log_dir"], CONTRACT)


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "g": rng.choice(["a", "b", "c"], size=n),
                         "y": np.where(x + rng.normal(scale=0.7, size=n) > 0.7, "yes", "no")})


def champion(rows: pd.DataFrame) -> np.ndarray:
    return 1 / (1 + np.exp(-2.5 * (rows["x"].to_numpy() - 0.7)))


def poisoned(rows: pd.DataFrame) -> np.ndarray:
    """What a label flip aimed at group b does: that group's scores fall."""
    return np.clip(champion(rows) - 0.15 * (rows["g"] == "b").to_numpy(), 0, 1)


def write_log(directory, rows: pd.DataFrame) -> None:
    directory.mkdir()
    with open(directory / "inference-1.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows.to_dict("records")):
            fh.write(json.dumps({"ts": "2026-12-01T00:00:00+00:00", "request_id": f"r{i}", "record_index": 0,
                                 "model_version": "toy:1", "features": {"x": row["x"], "g": row["g"]},
                                 "probability": 0.5, "label": "no"}) + "\n")


def test_a_targeted_candidate_is_caught_on_the_golden_set_and_in_the_inference_log(tmp_path):
    write_log(tmp_path / "log", frame(3000, 2))
    log = log_sample(params(str(tmp_path / "log")))
    assert list(log.columns) == ["x", "g"] and len(log) == 3000

    result = compare_on_golden(CONTRACT, *sections(params()), frame(4000, 1), poisoned, 0.5, champion, 0.5, log)

    failed = {(c["kind"], c.get("slice") or c.get("group"), c.get("data")) for c in result["checks"]
              if c["passed"] is False}
    assert ("slice", "g=b", None) in failed
    assert ("answer_change", "g=b", "golden set") in failed
    assert ("answer_change", "g=b", "inference log") in failed
    assert result["champion"]["n"] == result["challenger"]["n"] == 4000
    top = result["answer_changes"]["inference log"]["groups"][0]
    assert (top["column"], top["value"]) == ("g", "b") and top["examples"]


def test_the_same_model_changes_nothing_and_no_champion_means_no_comparison(tmp_path):
    rows = frame(2000, 3)
    same = compare_on_golden(CONTRACT, *sections(params()), rows, champion, 0.5, champion, 0.5)
    assert all(c["passed"] for c in same["checks"]) and same["answer_changes"]["golden set"]["changed"] == 0
    alone = compare_on_golden(CONTRACT, *sections(params()), rows, champion, 0.5, None, None)
    assert alone["champion"] is None and alone["checks"] == [] and alone["seconds"] >= 0
    assert log_sample(params(str(tmp_path / "absent"))) is None
