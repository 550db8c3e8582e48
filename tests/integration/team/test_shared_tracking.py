"""Team mode's registry: a real ``mlflow server`` on PostgreSQL with its artifacts in an S3 store.

One process ("machine A", its own working folder) trains, logs and registers a model the way
the train stage does, with ``MLFLOW_TRACKING_URI`` pointing at the server; the model files must
land in the object store, not on A's disk. Another process ("machine B", another folder, no
access to A's) finds the champion through the registry alias and loads the package back, as the
evaluate stage does when it scores the champion. The server authenticates (its basic-auth app):
A logs in as the pipeline user, B as a read-only user, which is all loading the champion needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import team

REPO = Path(__file__).resolve().parents[3]
BUCKET = "team-artifacts"

MACHINE_A = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scripts.make_test_bento import train
from mlops_template.core.artifacts import trusted_types
from mlops_template.core.features import build_features
from mlops_template.pipeline import tracking
config = {"tracking_uri": "sqlite:///mlflow.db", "experiment": "team"}
package = Path("package")
pipeline, spec, valid = train(package, 500)
info = tracking.log_training_run(
    config=config, model_name="team-model", pipeline=pipeline,
    input_example=build_features(valid.head(3), spec), params={"rows": 500}, metrics={"x": 1.0},
    tags=tracking.run_tags("test"), package_dir=package, pip_requirements=["scikit-learn"],
    trusted_types=trusted_types(package / "model.skops"))
tracking.set_champion(config, "team-model", info["model_version"], {"by": "machine-a"})
print(json.dumps(info))
"""

MACHINE_B = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mlops_template.core.artifacts import load_model
from mlops_template.pipeline import tracking
config = {"tracking_uri": "sqlite:///mlflow.db", "experiment": "team"}
champion = tracking.champion_version(config, "team-model")
package = tracking.download_package(config, champion.run_id, Path("downloaded"))
model = load_model(package / "model.skops")
print(json.dumps({"version": str(champion.version), "run_id": champion.run_id,
                  "classes": [str(c) for c in model.classes_]}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> dict:
    with team.shared_stack(tmp_path_factory.mktemp("team"), BUCKET, experiment="team", model="team-model") as urls:
        yield urls


def machine(name: str, server: dict, code: str, tmp_path: Path, user: str) -> dict:
    """Run ``code`` in its own folder with only the team settings, as another machine would."""
    home = tmp_path / name
    home.mkdir()
    # Only the server's URL and a user's credentials: a client reaches artifacts through the
    # server, never the store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(team.mlflow_env(server["url"], user, server["users"][user]))
    done = subprocess.run([sys.executable, "-c", code, str(REPO)], cwd=home, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_artifacts_reach_the_object_store_and_a_second_machine_loads_the_champion(server, tmp_path):
    registered = machine("machine-a", server, MACHINE_A, tmp_path, user="pipeline")
    stored = team.objects(server["endpoint"], BUCKET, "mlflow/")
    assert any(key.endswith("package/model.skops") for key in stored), stored
    assert any(key.endswith("MLmodel") for key in stored), stored
    assert not (tmp_path / "machine-a" / "mlruns").exists()  # nothing kept on the training machine

    loaded = machine("machine-b", server, MACHINE_B, tmp_path, user="reader")
    assert loaded == {"version": registered["model_version"], "run_id": registered["run_id"],
                      "classes": ["<=50K", ">50K"]}
