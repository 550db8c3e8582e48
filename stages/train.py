"""train: fit the configured sklearn Pipeline (on one machine or a Dask cluster), save it with skops, log to MLflow."""

import logging

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.artifacts import trusted_types
from mlops_template.core.config import setup_logging
from mlops_template.core.features import FeatureSpec
from mlops_template.core.io import requirement_pins, write_json
from mlops_template.core.package_files import MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.params import FeaturizeSection, MlflowSection, TrainSection
from mlops_template.core.tasks import task_of
from mlops_template.pipeline import tracking
from mlops_template.pipeline.distributed import dask_client, dataset_sha256
from mlops_template.pipeline.distributed_training import train_distributed
from mlops_template.pipeline.params_check import contract_or_exit, params_or_exit
from mlops_template.pipeline.training import train_candidate

logger = logging.getLogger("stages.train")


def run(contract_path: str, cfg: TrainSection, featurize: FeaturizeSection, model_name: str,
        mlflow_config: MlflowSection) -> None:
    """Fit the candidate, save it with its card, and log the run (train and featurize params) to MLflow."""
    contract = contract_or_exit(contract_path)
    spec = FeatureSpec.from_json(paths.FEATURE_SPEC)
    if cfg.engine == "dask":
        with dask_client() as client:
            candidate = train_distributed(cfg, model_name, contract, spec, paths.TRAIN, dataset_sha256(paths.TRAIN),
                                          paths.CANDIDATE, paths.FEATURE_SPEC, client)
    else:
        candidate = train_candidate(cfg, model_name, contract, spec, pd.read_parquet(paths.TRAIN),
                                    dataset_sha256(paths.TRAIN), paths.CANDIDATE, paths.FEATURE_SPEC)
    card = candidate.card
    mlflow_info = tracking.log_training_run(
        config=mlflow_config,
        model_name=card["model_name"],
        pipeline=candidate.pipeline,
        input_example=candidate.input_example,
        params={"train": cfg.model_dump(mode="json"), "featurize": featurize.model_dump(mode="json"),
                "estimator": cfg.estimator},
        metrics={f"train_{k}": v for k, v in card["train_metrics"].items()},
        tags=tracking.run_tags(card["git_revision"]),
        package_dir=paths.CANDIDATE,
        pip_requirements=requirement_pins(paths.SERVING_REQUIREMENTS),
        trusted_types=trusted_types(paths.CANDIDATE / MODEL_FILE),
        task=task_of(contract),
    )
    write_json(paths.CANDIDATE / MODEL_CARD_FILE, {**card, "mlflow": mlflow_info})
    logger.info("model %s saved, sha256 %s", paths.CANDIDATE / MODEL_FILE, card["sha256"])


def main() -> None:
    """Read params.yaml once; hand on train, featurize (logged with the run), deploy.model_name and mlflow."""
    setup_logging()
    params = params_or_exit()
    run(params.data.contract, params.train, params.featurize, params.deploy.model_name, params.mlflow)


if __name__ == "__main__":
    main()
