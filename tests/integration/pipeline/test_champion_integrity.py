"""The evaluate stage's champion comes from the registry but is checked against the deployment
record before it is loaded: a registry whose artifact or alias was changed behind the record is
refused, naming both digests, and the model file is never loaded.

A real MLflow store (sqlite and local artifacts in a temporary project root) with two versions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.artifacts import save_model
from mlops_template.core.features import FeatureSpec
from mlops_template.pipeline import assessment, tracking
from mlops_template.pipeline.training import build_pipeline

pytestmark = pytest.mark.integration
NAME = "toy-model"


def rows(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "g": rng.choice(["a", "b"], size=n), "y": (x + rng.normal(size=n) > 0).astype(int)})


def log_version(config: dict, directory: Path, seed: int) -> dict:
    """Fit a small model, log its package as a run, register it; the deployment record it would get."""
    import mlflow

    spec = FeatureSpec(numeric=("x",), categorical=("g",))
    data = rows(seed=seed)
    pipeline = build_pipeline(spec, "logistic_regression", {"C": 1.0 + seed}, seed).fit(data[["x", "g"]], data["y"])
    package = directory / f"package-{seed}"
    digest = save_model(pipeline, package / "model.skops")
    spec.to_json(package / "feature_spec.json")
    tracking.connect(config)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(package), artifact_path=tracking.PACKAGE_ARTIFACT)
    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    version = client.create_model_version(NAME, f"runs:/{run.info.run_id}/{tracking.PACKAGE_ARTIFACT}",
                                          run_id=run.info.run_id)
    return {"model_version": str(version.version), "mlflow_run_id": run.info.run_id, "sha256": digest,
            "threshold": 0.5}


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """Two registered versions; the champion alias on v2, as the deploy stage would leave it."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"tracking_uri": "sqlite:///mlflow.db", "experiment": "toy"}
    v1, v2 = log_version(config, tmp_path, 1), log_version(config, tmp_path, 2)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "2")
    return {"params": {"deploy": {"model_name": NAME}, "mlflow": config}, "records": (v1, v2), "root": tmp_path}


def stored_package(root: Path, run_id: str) -> Path:
    found = [p for p in (root / "mlruns").rglob("package/model.skops") if run_id in str(p)]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture()
def loads(monkeypatch) -> list[Path]:
    """Every model file the assessment loads (the real loader still runs)."""
    seen: list[Path] = []
    real = assessment.load_model

    def recording(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(assessment, "load_model", recording)
    return seen


def test_the_deployed_champion_is_loaded_and_scores(registry, loads, tmp_path):
    predictor, info = assessment.verified_champion(NAME, registry["params"]["mlflow"], registry["records"][1],
                                                   tmp_path / "dl")
    assert info["model_version"] == "2" and len(loads) == 1
    assert predictor(rows(5)[["x", "g"]]).shape == (5,)


def test_swapped_artifact_and_checksum_are_refused_before_loading(registry, loads, tmp_path):
    v1, v2 = registry["records"]
    target = stored_package(registry["root"], v2["mlflow_run_id"])
    source = stored_package(registry["root"], v1["mlflow_run_id"])
    shutil.copy(source, target)  # whoever can write the registry swaps the bytes and the checksum beside them
    shutil.copy(f"{source}.sha256", f"{target}.sha256")

    with pytest.raises(assessment.ChampionRefused) as refused:
        assessment.verified_champion(NAME, registry["params"]["mlflow"], v2, tmp_path / "dl")

    assert v1["sha256"] in str(refused.value) and v2["sha256"] in str(refused.value)
    assert loads == []


def test_an_alias_moved_behind_the_record_is_refused_before_loading(registry, loads, tmp_path):
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    with pytest.raises(assessment.ChampionRefused, match="is not the deployed champion v2"):
        assessment.verified_champion(NAME, registry["params"]["mlflow"], registry["records"][1], tmp_path / "dl")
    with pytest.raises(assessment.ChampionRefused, match="records no champion"):
        assessment.verified_champion(NAME, registry["params"]["mlflow"], None, tmp_path / "dl")
    assert loads == []
