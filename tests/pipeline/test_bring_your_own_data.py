"""Bring your own data: the pipeline runs end to end on a second, differently shaped dataset.

scikit-learn's bundled breast cancer data (569 rows, 30 float features, no categorical columns,
no missing values) replaces UCI Adult by changing configuration only: a contract drafted with
``python -m mlops_template.contract infer`` and edits to params.yaml. No Python file changes.
"""

from __future__ import annotations

import pytest
import yaml

from pipeline_helpers import STAGES, running_stages

pytestmark = pytest.mark.slow

PIPELINE_OUTPUTS = ("dvc.lock", "metrics/", "deployments/")


@pytest.fixture(scope="module")
def cancer_csv_rows():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame["diagnosis"] = data.target.map(dict(enumerate(data.target_names)))  # 0 malignant, 1 benign
    assert frame.shape == (569, 31)
    return frame


def test_pipeline_runs_on_breast_cancer_data(make_clone, cancer_csv_rows):
    repo = make_clone("byod")
    frame = cancer_csv_rows
    frame.to_csv(repo.path / "data" / "raw" / "cancer.csv", index=False)

    # 1. Draft the contract with the CLI.
    repo.python("-m", "mlops_template.contract", "infer", "data/raw/cancer.csv",
                "--target", "diagnosis", "--positive", "malignant", "--name", "breast-cancer",
                "-o", "contracts/cancer.yaml")
    contract = yaml.safe_load((repo.path / "contracts" / "cancer.yaml").read_text(encoding="utf-8"))
    columns = contract["columns"]
    assert len(columns) == 31
    assert contract["target"] == {"column": "diagnosis", "positive": "malignant"}
    assert columns["diagnosis"] == {"type": "str", "role": "target", "allowed": ["benign", "malignant"]}
    for name in frame.columns.drop("diagnosis"):
        spec = columns[name]
        assert spec["type"] == "float" and spec["role"] == "numeric", (name, spec)
        assert spec["min"] == pytest.approx(frame[name].min())
        assert spec["max"] == pytest.approx(frame[name].max())
        assert "nullable" not in spec
    repo.python("-m", "mlops_template.contract", "check", "contracts/cancer.yaml")

    # 2. Point the pipeline at the new data through params.yaml only.
    params = repo.params()
    params["data"].update(raw="data/raw/cancer.csv", contract="contracts/cancer.yaml")
    params["featurize"].update(drop=[], derived={}, reference_rows=100)
    params["evaluate"]["slices"] = []
    params["deploy"].update(model_name="breast-cancer", service_name="breast_cancer_service")
    params["mlflow"]["experiment"] = "breast-cancer"
    repo.write_params(params)

    # 3. Run it.
    proc = repo.dvc("repro")
    output = proc.stdout + proc.stderr
    assert running_stages(output) == list(STAGES), output

    validation = repo.json("metrics/validation.json")
    assert validation["rows_in"] == 569 and validation["rows_rejected"] == 0, validation
    evaluation = repo.json("metrics/evaluation.json")
    assert evaluation["roc_auc"] > 0.95, evaluation
    # The split is by row hash: the test share is test_size in expectation (binomial spread).
    share = params["featurize"]["test_size"]
    assert evaluation["n"] == pytest.approx(569 * share, abs=4 * (569 * share * (1 - share)) ** 0.5)
    card = repo.json("models/candidate/model_card.json")
    assert card["positive_class"] == "malignant"
    assert sorted(card["features"]) == sorted(frame.columns.drop("diagnosis"))
    champion = repo.json("deployments/champion.json")["champion"]
    assert champion["model_name"] == "breast-cancer"
    assert champion["bento_tag"].startswith("breast_cancer_service:")
    assert (repo.path / champion["archive"]).is_file()
    confusion = repo.json("metrics/plots/confusion.json")
    assert {row["actual"] for row in confusion} == {"benign", "malignant"}
    repo.assert_up_to_date()

    # 4. Only configuration and pipeline outputs changed among tracked files; no code did.
    changed = repo.git("diff", "--name-only").stdout.split()
    assert "params.yaml" in changed
    unexpected = [p for p in changed if p != "params.yaml" and not p.startswith(PIPELINE_OUTPUTS)]
    assert not unexpected, f"files other than params.yaml and pipeline outputs changed: {unexpected}"
    assert not [p for p in changed if p.endswith(".py")]
    untracked = repo.git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    new_files = sorted(line[3:] for line in untracked if line.startswith("??"))
    new_inputs = [p for p in new_files if not p.startswith(PIPELINE_OUTPUTS)]
    assert new_inputs == ["contracts/cancer.yaml", "data/raw/cancer.csv"], new_files
