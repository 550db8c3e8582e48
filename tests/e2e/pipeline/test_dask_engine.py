"""``train.engine: dask``: the whole pipeline on a 2-worker cluster, held to the one-process path.

In one fresh clone, ``train.estimator: lightgbm`` and ``train.engine: dask`` are set, with a
``train.partition_mb`` that cuts the bundled ``adult.csv.gz`` into 8 partitions as it streams, and
``dvc repro`` runs every stage against a cluster started as an operator starts one (``dask
scheduler`` and two ``dask worker`` processes, tests/support/dask_cluster.py) through
``DASK_SCHEDULER_ADDRESS``. (The stages' own ``LocalCluster`` runs in the integration tier and in
``score --engine dask``'s command test.) Then, against the single-process code on the same data,
in this process:

- the quarantine (file, line and failed checks of every rejected row), the counts per check and
  the valid rows are identical;
- the train/test split is the one the single-process stage makes with the same salt;
- a LightGBM fitted in one process on the same training rows scores a test ROC AUC within 0.005
  of the cluster-trained model's (what evaluate wrote);
- the deployed bento, under a real ``bentoml serve``, answers held-out rows with exactly the
  probabilities the candidate pipeline gives offline (the model file is LightGBM's text, checked
  against its parity probe when the service loads it).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.metrics import roc_auc_score

from mlops_template.core.artifacts import load_model
from mlops_template.core.contract import load_contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.params import TrainSection
from mlops_template.core.tasks import task_of
from mlops_template.pipeline.splits import in_test_set
from mlops_template.pipeline.training import train_candidate
from mlops_template.pipeline.validation import (
    FAILED_CHECKS_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    validate_file,
)
from tests.support.clones import Clone
from tests.support.dask_cluster import dask_cluster
from tests.support.servers import start_bento_server, stop_server, wait_ready

PARTITIONS = 8
SALT = "dask-engine-test-salt-0123456789"
AUC_TOLERANCE = 0.005
SERVED_ROWS = 300


@pytest.fixture(scope="module")
def cluster_run(make_clone, tmp_path_factory) -> Clone:
    """A clone whose pipeline ran on a scheduler and two workers over Adult in 8 partitions."""
    repo = make_clone("dask-engine")
    with gzip.open(next((repo.path / "data/raw").glob("*.csv.gz")), "rb") as source:
        text_bytes = len(source.read())   # partitions are cut from the decompressed text
    params = repo.params()
    params["train"].update(estimator="lightgbm", engine="dask", partition_mb=text_bytes / PARTITIONS / 2**20 * 1.001)
    repo.write_params(params)
    with dask_cluster(tmp_path_factory.mktemp("dask-cluster"), workers=2, project=repo.path) as address:
        repo.env.update(DASK_SCHEDULER_ADDRESS=address, SPLIT_SALT=SALT)
        repo.dvc("repro")
    return repo


def test_the_quarantine_and_valid_rows_are_those_of_the_single_process_path(cluster_run: Clone) -> None:
    repo = cluster_run
    contract = load_contract(repo.path / repo.params()["data"]["contract"])
    single = validate_file(repo.path / "data/raw", contract)
    parts = sorted((repo.path / "data/validated/data.parquet").glob("*.parquet"))
    assert len(parts) >= PARTITIONS, parts

    def rejected_rows(frame: pd.DataFrame) -> list[tuple]:
        return sorted((str(r[SOURCE_FILE_COLUMN]), int(r[SOURCE_ROW_COLUMN]),
                       frozenset(str(r[FAILED_CHECKS_COLUMN]).split("; "))) for _, r in frame.iterrows())

    quarantine = pd.read_csv(repo.path / "data/quarantine/rejected.csv", dtype=str, keep_default_na=False)
    assert len(single.rejected) > 0 and rejected_rows(quarantine) == rejected_rows(single.rejected)
    summary = repo.json("metrics/validation.json")
    assert summary["failures_by_check"] == dict(sorted(single.failures_by_check.items()))
    assert (summary["rows_in"], summary["rows_valid"]) == (single.rows_in, len(single.valid))

    valid = pd.read_parquet(repo.path / "data/validated/data.parquet")
    columns = list(single.valid.columns)
    ordered = [frame[columns].sort_values(columns, na_position="first").reset_index(drop=True)
               for frame in (valid, single.valid)]
    pd.testing.assert_frame_equal(*ordered)


def test_the_split_is_the_single_process_split(cluster_run: Clone) -> None:
    repo = cluster_run
    params = repo.params()
    contract = load_contract(repo.path / params["data"]["contract"])
    valid = pd.read_parquet(repo.path / "data/validated/data.parquet")
    inputs = [c for c in contract.column_names if c != contract.target]
    expected = int(in_test_set(valid, params["featurize"]["test_size"], params["featurize"]["seed"], SALT,
                               inputs).sum())
    train = pd.read_parquet(repo.path / "data/features/train.parquet")
    test = pd.read_parquet(repo.path / "data/features/test.parquet")
    assert (len(test), len(train) + len(test)) == (expected, len(valid))
    assert len(list((repo.path / "data/features/train.parquet").glob("part-*.parquet"))) >= PARTITIONS


def test_the_cluster_model_scores_as_a_single_process_one(cluster_run: Clone, tmp_path) -> None:
    repo = cluster_run
    params = repo.params()
    contract = load_contract(repo.path / params["data"]["contract"])
    card = repo.json("models/candidate/model_card.json")
    assert card["engine"]["name"] == "dask" and card["engine"]["workers"] == 2, card.get("engine")
    assert card["estimator"] == "lightgbm"
    spec_path = repo.path / "data/features/feature_spec.json"
    spec = FeatureSpec.from_json(spec_path)
    cfg = TrainSection.parse({**params["train"], "engine": "single"})
    single = train_candidate(cfg, "single", contract, spec, pd.read_parquet(repo.path / "data/features/train.parquet"),
                             "0" * 64, tmp_path / "single", spec_path)
    test = pd.read_parquet(repo.path / "data/features/test.parquet")
    task = task_of(contract)
    single_auc = roc_auc_score(task.encode(test[contract.target]), task.predict(single.pipeline,
                                                                                build_features(test, spec)))
    cluster_auc = repo.json("metrics/evaluation.json")["roc_auc"]
    assert cluster_auc > 0.9 and abs(cluster_auc - single_auc) <= AUC_TOLERANCE, (cluster_auc, single_auc)


def test_the_served_bento_answers_what_the_pipeline_computes(cluster_run: Clone, tmp_path) -> None:
    repo = cluster_run
    contract = load_contract(repo.path / repo.params()["data"]["contract"])
    task = task_of(contract)
    model = load_model(repo.path / "models/candidate/model.skops")
    spec = FeatureSpec.from_json(repo.path / "models/candidate/feature_spec.json")
    test = pd.read_parquet(repo.path / "data/features/test.parquet").head(SERVED_ROWS)
    expected = task.predict(model, build_features(test, spec))
    inputs = [c for c in contract.column_names if c != contract.target]
    records = json.loads(test[inputs].to_json(orient="records"))
    champion = repo.json("deployments/champion.json")["champion"]
    process, url = start_bento_server(champion["bento_tag"], repo.path / ".bentoml", tmp_path / "serve.log",
                                      INFERENCE_LOG="off")
    try:
        wait_ready(url, process)
        single = [requests.post(f"{url}/predict", json={"records": [r]}, timeout=30) for r in records[:50]]
        batch = requests.post(f"{url}/predict", json={"records": records}, timeout=60)
    finally:
        stop_server(process)
    assert all(r.status_code == 200 for r in single) and batch.status_code == 200, batch.text[:500]
    served = np.array([answer["probability"] for answer in batch.json()])
    one_by_one = np.array([r.json()[0]["probability"] for r in single])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(one_by_one, expected[:50], rtol=0, atol=1e-9)
