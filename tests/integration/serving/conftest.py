"""Fixtures for the HTTP tests of the service: one packaged bento, real ``bentoml serve`` servers.

The model is trained and packaged once per session into its own temporary BentoML home (apart
from ``test_service_http.py``'s, which tampers with its store). ``start_server`` serves that bento
with extra environment settings and always stops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlops_template.core.artifacts import save_model
from mlops_template.core.contract import load_contract
from mlops_template.core.features import build_features, feature_spec_from
from mlops_template.pipeline.training import build_pipeline
from mlops_template.pipeline.validation import validate_file
from tests.support.servers import (
    CONTRACT,
    MAX_BODY_BYTES,
    MAX_RECORDS,
    RAW,
    REPO,
    TRAIN_ROWS,
    package_in_child,
    records_of,
    start_bento_server,
    stop_server,
    train_small_model,
    wait_ready,
)

logger = logging.getLogger(__name__)



@pytest.fixture(scope="session")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Train and package a small model once; yield the bento tag, store and a good record."""
    root = tmp_path_factory.mktemp("service-bento")
    home = root / "bentoml"
    model_dir = root / "model"
    model_dir.mkdir()
    test, pipeline, spec = train_small_model(model_dir)
    result = package_in_child(model_dir, home, root / "export")
    yield {"tag": result["bento_tag"], "home": home, "root": root, "test": test,
           "archive": root / "export" / "champion.bento",
           "records": records_of(test), "pipeline": pipeline, "spec": spec}


@contextlib.contextmanager
def serve(bento: dict, name: str, **env: str) -> Iterator[str]:
    """Serve the bento with ``env`` added to the environment; yield its URL; always stop it."""
    log_path = Path(bento["root"]) / f"serve-{name}.log"
    process, url = start_bento_server(bento["tag"], bento["home"], log_path, **{
        "MAX_RECORDS": str(MAX_RECORDS), "MAX_BODY_BYTES": str(MAX_BODY_BYTES), **env})
    try:
        started = time.monotonic()
        wait_ready(url, process)
        logger.warning("server %s ready after %.1f s (log: %s)", name,
                       time.monotonic() - started, log_path)
        yield url
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def server(bento: dict) -> Iterator[str]:
    """One server with the default settings, shared by the tests that do not count metrics."""
    with serve(bento, "default") as url:
        yield url


@pytest.fixture(scope="session")
def start_server(bento: dict) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with start_server(name, **env) as url:`` serves a fresh server with extra settings."""
    return lambda name, **env: serve(bento, name, **env)


# Runs in a child: BentoML fixes its store path once per process (see conftest._package).
PACKAGE_CODE = """
import json, sys
from pathlib import Path
import bentoml
from mlops_template.pipeline.packaging import _serving_config, package_model, save_bento_model
from mlops_template.core.io import sha256_of
model_dir, contract, export = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
v8 = package_model(model_dir, contract, 0.5, 'adult-income', 'adult_income_service',
                   {'model_version': '8', 'stage': 'test'}, export / 'champion.bento')['model_tag']
serving = _serving_config(contract, 0.5, {'model_version': '9'})
v9 = save_bento_model(model_dir, contract, serving, 'adult-income', {'model_version': '9'},
                      sha256_of(model_dir / 'model.skops'))
with open(Path(bentoml.models.get(v9).path) / 'model.skops', 'ab') as fh:
    fh.write(b'tampered')
v7 = [str(m.tag) for m in bentoml.models.list('adult-income')
      if m.info.labels.get('model_version') == '7'][0]
print(json.dumps({'7': v7, '8': v8, '9': v9}))
"""


def _train_second(model_dir: Path) -> None:
    """A logistic regression different from the bento's (stronger regularisation, other rows)."""
    contract = load_contract(CONTRACT)
    valid = validate_file(RAW, contract).valid
    spec = feature_spec_from(contract, ["fnlwgt", "education"],
                             {"capital_net": "capital_gain - capital_loss"})
    train = valid.iloc[TRAIN_ROWS + 1000: 2 * TRAIN_ROWS + 1000]
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500, "C": 0.05}, 7)
    pipeline.fit(build_features(train, spec), train[contract.target])
    save_model(pipeline, model_dir / "model.skops")
    spec.to_json(model_dir / "feature_spec.json")
    (model_dir / "model_card.json").write_text(json.dumps({"name": "adult-income"}),
                                               encoding="utf-8")


@pytest.fixture(scope="session")
def tags(bento: dict) -> dict[str, str]:
    """BentoML model tags by version: '7' (the bento's), '8' (another model), '9' (tampered)."""
    root = Path(bento["root"]) / "routing"
    model_dir = root / "model-v8"
    model_dir.mkdir(parents=True)
    _train_second(model_dir)
    env = {**os.environ, "BENTOML_HOME": str(bento["home"]), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-c", PACKAGE_CODE, str(model_dir), str(CONTRACT),
                           str(root / "export")], env=env, cwd=REPO, capture_output=True,
                          text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])
