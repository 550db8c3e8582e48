"""Bring your own data, through the README's exact steps, on public datasets of other shapes.

For each dataset, in a fresh clone: the CSV goes into ``data/raw/``, ``python -m
mlops_template onboard`` drafts the contract and points params.yaml at it, ``dvc repro`` runs
the pipeline, and a real ``bentoml serve`` of the deployed bento answers every held-out row
(nulls included) with 200 and the offline ROC AUC. No Python file changes. The datasets ship
inside PyPI packages (offline); dirt is added to copies where a case is missing, so between
them they hold integral floats, empty cells, identifiers, dates, an open vocabulary,
zero-inflated amounts and a time column whose later values lie outside the first batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from sklearn.metrics import roc_auc_score

from tests.support.clones import STAGES, Clone, running_stages
from tests.support.servers import start_bento_server, stop_server, wait_ready
from tests.support.task_datasets import blank

PIPELINE_OUTPUTS = ("dvc.lock", "metrics/", "deployments/")


@dataclass(frozen=True)
class Dataset:
    """A public dataset made into a binary-classification CSV, and what its contract must say."""

    name: str
    build: Callable[[], tuple[pd.DataFrame, pd.DataFrame | None]]  # first batch, later batch
    target: str
    positive: str
    ignored: tuple[str, ...] = ()
    open_vocabulary: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()


def penguins() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Palmer penguins: mixed types, integral floats; split by year (2009 comes later)."""
    from palmerpenguins import load_penguins

    frame = load_penguins().dropna(subset=["sex"])  # a row without a label cannot train
    frame = blank(frame, ["bill_depth_mm", "island"], 0.05, seed=1)
    return frame[frame["year"] < 2009], frame[frame["year"] == 2009]


def anes96() -> tuple[pd.DataFrame, None]:
    """1996 US election survey (statsmodels): all numeric, written as floats, a 0/1 target."""
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data
    frame.insert(0, "respondent_id", np.arange(1, len(frame) + 1))
    return blank(frame, ["income", "TVnews"], 0.04, seed=2), None


def cars() -> tuple[pd.DataFrame, None]:
    """Vega cars: a free-text model name, model years as dates, missing figures."""
    from vega_datasets import local_data

    frame = local_data.cars()
    frame["Year"] = frame["Year"].dt.strftime("%Y-%m-%d")
    frame["made_in_usa"] = np.where(frame.pop("Origin") == "USA", "yes", "no")
    return frame, None


def seattle_weather() -> tuple[pd.DataFrame, None]:
    """Vega Seattle weather: one row per date, zero-inflated precipitation, a weaker signal."""
    from vega_datasets import local_data

    frame = local_data.seattle_weather()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame["sunny"] = np.where(frame.pop("weather") == "sun", "yes", "no")
    return frame, None


DATASETS = {
    d.name: d for d in (
        Dataset("penguins", penguins, "sex", "female", nullable=("bill_depth_mm", "island")),
        Dataset("anes96", anes96, "vote", "1", ignored=("respondent_id",), nullable=("income", "TVnews")),
        Dataset("cars", cars, "made_in_usa", "yes", ignored=("Year",), open_vocabulary=("Name",),
                nullable=("Miles_per_Gallon", "Horsepower")),
        Dataset("seattle-weather", seattle_weather, "sunny", "yes", ignored=("date",)),
    )
}


def adopt(repo: Clone, dataset: Dataset, frame: pd.DataFrame) -> tuple[dict, float]:
    """README steps 1-3: the CSV into data/raw/, the onboard command, ``dvc repro``."""
    csv = f"data/raw/{dataset.name}.csv"
    frame.to_csv(repo.path / csv, index=False)
    printed = repo.python("-m", "mlops_template", "onboard", csv, "--target", dataset.target,
                          "--positive", dataset.positive).stdout
    for column in (*dataset.ignored, *dataset.open_vocabulary, *dataset.nullable):
        assert column in printed, printed
    started = time.monotonic()
    proc = repo.dvc("repro")
    seconds = time.monotonic() - started
    assert running_stages(proc.stdout + proc.stderr) == list(STAGES), proc.stdout[-3000:]
    contract = yaml.safe_load((repo.path / f"contracts/{dataset.name}.yaml").read_text(encoding="utf-8"))
    return contract, seconds


def serve_held_out_rows(repo: Clone, contract: dict, log_dir) -> tuple[float, float, int, int]:
    """Every held-out row, one request each, to a real ``bentoml serve`` of the deployed bento."""
    champion = repo.json("deployments/champion.json")["champion"]
    test = pd.read_parquet(repo.path / "data/features/test.parquet")
    inputs = [name for name, spec in contract["columns"].items() if spec["role"] != "target"]
    records = json.loads(test[inputs].to_json(orient="records"))
    with_nulls = sum(any(v is None for v in r.values()) for r in records)
    process, url = start_bento_server(champion["bento_tag"], repo.path / ".bentoml", log_dir / "serve.log",
                                      INFERENCE_LOG="off")
    try:
        wait_ready(url, process)
        answered, probabilities = 0, []
        with requests.Session() as session:
            for record in records:
                response = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
                assert response.status_code == 200, (record, response.text)
                answered += 1
                probabilities.append(response.json()[0]["probability"])
    finally:
        stop_server(process)
    labels = (test[contract["target"]["column"]].astype(str) == contract["target"]["positive"]).astype(int)
    return roc_auc_score(labels, probabilities), answered / len(records), len(records), with_nulls


@pytest.mark.parametrize("name", list(DATASETS))
def test_own_csv_to_a_served_model_through_the_readme_steps(make_clone, tmp_path, name):
    dataset = DATASETS[name]
    first, later = dataset.build()
    repo = make_clone(f"byod-{name}")
    contract, seconds = adopt(repo, dataset, first)

    # The contract decided what the dataset needs, and accepted every row it was drafted from.
    columns = contract["columns"]
    for column in dataset.ignored:
        assert columns[column]["role"] == "ignore", (column, columns[column])
    for column in dataset.open_vocabulary:
        assert columns[column]["role"] == "categorical" and "allowed" not in columns[column]
    for column in dataset.nullable:
        assert columns[column].get("nullable") is True, (column, columns[column])
    validation = repo.json("metrics/validation.json")
    assert validation["rows_in"] == len(first) and validation["rows_rejected"] == 0, validation

    # The gate judged the first model against the prior-only baseline and blessed it.
    gate = repo.json("metrics/gate.json")
    assert gate["blessed"], gate["reasons"]
    assert {c["kind"] for c in gate["checks"] if c["passed"]} == {"baseline"}
    evaluation = repo.json("metrics/evaluation.json")
    assert (repo.path / repo.json("deployments/champion.json")["champion"]["archive"]).is_file()

    served_auc, answered, held_out, with_nulls = serve_held_out_rows(repo, contract, tmp_path)
    assert answered == 1.0
    assert served_auc == pytest.approx(evaluation["roc_auc"], abs=1e-5)
    print(f"\n{name}: {len(first)} rows x {len(first.columns)} columns; roles "
          f"{sorted((c, s['role']) for c, s in columns.items() if s['role'] != 'numeric')}; "
          f"dvc repro {seconds:.0f} s; ROC AUC offline {evaluation['roc_auc']:.4f}, served "
          f"{served_auc:.4f} on {held_out} held-out rows ({with_nulls} with nulls), {answered:.0%} answered 200")
    if name != "seattle-weather":  # its rows are complete; the others carry nulls into the test set
        assert with_nulls > 0

    # Only configuration, the new data and pipeline outputs changed; no code did.
    changed = repo.git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    paths = sorted(line[3:] for line in changed)
    unexpected = [p for p in paths if not p.startswith((*PIPELINE_OUTPUTS, "params.yaml", "contracts/",
                                                        "data/raw/", "data/archive/"))]
    assert not unexpected, paths
    assert not [p for p in paths if p.endswith(".py")]
    repo.assert_up_to_date()

    if later is not None:
        later_batch_goes_through_retrain(repo, dataset, later)


def later_batch_goes_through_retrain(repo: Clone, dataset: Dataset, later: pd.DataFrame) -> None:
    """Next year's penguins: outside the first batch's years, accepted with the drift named."""
    name = f"{dataset.name}-later.csv"
    later.to_csv(repo.path / "data/incoming" / name, index=False)
    proc = repo.python("-m", "mlops_template", "retrain", check=False, timeout=900)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [a["batch"] for a in summary["accepted"]] == [name], summary
    assert summary["status"] in ("promoted", "kept") and summary["candidate_version"] == "2", summary
    report = repo.json(f"metrics/ingest/{name}.report.json")
    assert report["accepted"] and any("year" in w for w in report["warnings"]), report
    assert (repo.path / "data/raw" / name).is_file()
    assert repo.json("metrics/validation.json")["rows_rejected"] == 0


def test_a_first_model_that_is_not_blessed_stops_dvc_repro(make_clone):
    """Labels that no feature predicts: the gate refuses, and the pipeline says so and fails."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"x": rng.normal(size=400).round(3), "kind": rng.choice(["a", "b"], 400),
                          "label": rng.choice(["yes", "no"], 400)})
    repo = make_clone("byod-noise")
    frame.to_csv(repo.path / "data/raw/noise.csv", index=False)
    repo.python("-m", "mlops_template", "onboard", "data/raw/noise.csv", "--target", "label", "--positive", "yes")
    proc = repo.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "NOTHING DEPLOYED" in output and "gate.baseline_thresholds." in output, output[-3000:]
    assert not repo.json("metrics/gate.json")["blessed"]
    record = repo.json("deployments/champion.json")
    assert record["champion"] is None and record["last_decision"]["blessed"] is False
    assert not list((repo.path / "models/serving").glob("*.bento"))


def test_params_that_name_missing_columns_stop_the_first_stage(make_clone):
    """The onboard command rewrote the column keys; a stale one brought back fails at once."""
    repo = make_clone("byod-stale-params")
    first, _ = penguins()
    first.to_csv(repo.path / "data/raw/penguins.csv", index=False)
    repo.python("-m", "mlops_template", "onboard", "data/raw/penguins.csv", "--target", "sex", "--positive", "male")
    params = repo.params()
    params["featurize"]["drop"] = ["fnlwgt"]
    repo.write_params(params)
    proc = repo.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert running_stages(output) == ["validate"], output[-3000:]
    assert "featurize.drop names ['fnlwgt']" in output, output[-3000:]
    assert not (repo.path / "data/validated/data.parquet").exists()
