"""train: fit the configured sklearn Pipeline, save it with skops, log the run to MLflow."""

import logging
import shutil
from pathlib import Path

import pandas as pd

from mlops_template.config import git_revision, load_params, setup_logging, write_json
from mlops_template.evaluation import score_metrics
from mlops_template.features import FeatureSpec, build_features
from mlops_template.model import build_pipeline, save_model, sha256_of, trusted_types
from mlops_template.params_check import contract_or_exit
from mlops_template import tracking

TRAIN = "data/features/train.parquet"
SPEC = "data/features/feature_spec.json"
OUT_DIR = Path("models/candidate")
SERVING_REQUIREMENTS = "requirements-serve.txt"

logger = logging.getLogger("stages.train")


def main() -> None:
    setup_logging()
    params = load_params()
    cfg = params["train"]
    contract = contract_or_exit(params)
    spec = FeatureSpec.from_json(SPEC)
    train = pd.read_parquet(TRAIN)
    features = build_features(train, spec)
    labels = (train[contract.target] == contract.positive_class).astype(int)

    hyperparameters = cfg["hyperparameters"].get(cfg["estimator"], {})
    pipeline = build_pipeline(spec, cfg["estimator"], hyperparameters, cfg["seed"])
    logger.info("fitting %s on %d rows x %d features", cfg["estimator"], *features.shape)
    pipeline.fit(features, labels)
    train_metrics = score_metrics(labels.to_numpy(), pipeline.predict_proba(features)[:, 1], 0.5)

    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    digest = save_model(pipeline, OUT_DIR / "model.skops")
    shutil.copy(SPEC, OUT_DIR / "feature_spec.json")
    card = {
        "model_name": params["deploy"]["model_name"],
        "contract": contract.name,
        "target": contract.target,
        "positive_class": contract.positive_class,
        "estimator": cfg["estimator"],
        "hyperparameters": hyperparameters,
        "seed": cfg["seed"],
        "features": spec.columns,
        "training_data": {"rows": len(train), "sha256": sha256_of(TRAIN),
                          "positive_share": round(float(labels.mean()), 6)},
        "train_metrics": {k: train_metrics[k] for k in ("roc_auc", "log_loss", "accuracy")},
        "git_revision": git_revision(),
        "sha256": digest,
    }
    write_json(OUT_DIR / "model_card.json", card)

    requirements = Path(SERVING_REQUIREMENTS).read_text(encoding="utf-8").split()
    mlflow_info = tracking.log_training_run(
        config=params["mlflow"],
        model_name=card["model_name"],
        pipeline=pipeline,
        input_example=features.head(5),
        params={"train": cfg, "featurize": params["featurize"], "estimator": cfg["estimator"]},
        metrics={f"train_{k}": v for k, v in card["train_metrics"].items()},
        tags=tracking.run_tags(card["git_revision"]),
        package_dir=OUT_DIR,
        pip_requirements=[r for r in requirements if not r.startswith("#")],
        trusted_types=trusted_types(OUT_DIR / "model.skops"),
    )
    write_json(OUT_DIR / "model_card.json", {**card, "mlflow": mlflow_info})
    logger.info("model %s saved, sha256 %s", OUT_DIR / "model.skops", digest)


if __name__ == "__main__":
    main()
