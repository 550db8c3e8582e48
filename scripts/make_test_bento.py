"""Train a small model on the bundled data and package it as a bento, without the pipeline.

For tests that need a real bento (container build, Prometheus scrape) in a fresh clone, where
``make pipeline`` has not run and ``models/serving/`` is empty. Uses the same packaging code as
the deploy stage, so the result is shaped exactly like the pipeline's output.

    BENTOML_HOME=/tmp/h python scripts/make_test_bento.py --export-dir /tmp/ctx/models/serving

Prints a JSON object: bento_tag, model_tag, archive, model_version (plus package_model's fields).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONTRACT = REPO / "contracts" / "adult.yaml"
RAW = REPO / "data" / "raw" / "adult.csv.gz"


def train(model_dir: Path, rows: int) -> tuple[Any, Any, Any]:
    """Fit a logistic regression on the first ``rows`` valid rows; write the model directory.

    Returns the pipeline, its feature spec and every valid row (the service tests score the
    rows after the first ``rows`` as held-out data).
    """
    from mlops_template.core.artifacts import save_model
    from mlops_template.core.contract import load_contract
    from mlops_template.core.features import build_features, feature_spec_from
    from mlops_template.pipeline.training import build_pipeline
    from mlops_template.pipeline.validation import validate_file

    contract = load_contract(CONTRACT)
    valid = validate_file(RAW, contract).valid
    fitted_on = valid.iloc[:rows]
    spec = feature_spec_from(contract, ["fnlwgt", "education"],
                             {"capital_net": "capital_gain - capital_loss"})
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, 42)
    pipeline.fit(build_features(fitted_on, spec), fitted_on[contract.target])
    save_model(pipeline, model_dir / "model.skops")
    spec.to_json(model_dir / "feature_spec.json")
    card = {"name": "adult-income", "estimator": "logistic_regression", "train_rows": rows}
    (model_dir / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    return pipeline, spec, valid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--model-version", default="test")
    parser.add_argument("--threshold", type=float, default=0.4)
    args = parser.parse_args(argv)
    if not os.environ.get("BENTOML_HOME"):
        parser.error("set BENTOML_HOME (a scratch store: this writes a model and a bento into it)")
    from mlops_template.pipeline.packaging import package_model

    with tempfile.TemporaryDirectory(prefix="test-model-") as tmp:
        model_dir = Path(tmp)
        train(model_dir, args.rows)
        result = package_model(model_dir, CONTRACT, args.threshold, "adult-income",
                               "adult_income_service", {"model_version": args.model_version},
                               args.export_dir / "champion.bento")
    print(json.dumps({**result, "model_version": args.model_version}))


if __name__ == "__main__":
    main()
