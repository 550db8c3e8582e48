"""train: fit the configured sklearn Pipeline, save it with skops, log the run to MLflow."""

import logging

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.artifacts import trusted_types
from mlops_template.core.config import load_params, setup_logging
from mlops_template.core.features import FeatureSpec
from mlops_template.core.io import requirement_pins, sha256_of, write_json
from mlops_template.pipeline import tracking
from mlops_template.pipeline.params_check import contract_or_exit
from mlops_template.pipeline.training import train_candidate

logger = logging.getLogger("stages.train")


def main() -> None:
    setup_logging()
    params = load_params()
    contract = contract_or_exit(params)
    spec = FeatureSpec.from_json(paths.FEATURE_SPEC)
    candidate = train_candidate(params, contract, spec, pd.read_parquet(paths.TRAIN), sha256_of(paths.TRAIN),
                                paths.CANDIDATE, paths.FEATURE_SPEC)
    card, cfg = candidate.card, params["train"]
    mlflow_info = tracking.log_training_run(
        config=params["mlflow"],
        model_name=card["model_name"],
        pipeline=candidate.pipeline,
        input_example=candidate.input_example,
        params={"train": cfg, "featurize": params["featurize"], "estimator": cfg["estimator"]},
        metrics={f"train_{k}": v for k, v in card["train_metrics"].items()},
        tags=tracking.run_tags(card["git_revision"]),
        package_dir=paths.CANDIDATE,
        pip_requirements=requirement_pins(paths.SERVING_REQUIREMENTS),
        trusted_types=trusted_types(paths.CANDIDATE / "model.skops"),
    )
    write_json(paths.CANDIDATE / "model_card.json", {**card, "mlflow": mlflow_info})
    logger.info("model %s saved, sha256 %s", paths.CANDIDATE / "model.skops", card["sha256"])


if __name__ == "__main__":
    main()
