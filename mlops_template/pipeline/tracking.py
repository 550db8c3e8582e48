"""MLflow tracking and registry, the only module that calls MLflow: runs, versions, aliases, tags."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_template.core.config import project_root
from mlops_template.core.params import MlflowSection

if TYPE_CHECKING:
    from mlops_template.core.tasks import Task

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
MAX_TAG_LENGTH = 5000  # MLflow's limit on a tag value
PACKAGE_ARTIFACT = "package"  # our own skops file, checksum, spec and card, logged beside the model
MlflowConfig = MlflowSection | dict[str, Any]  # the ``mlflow`` section, typed or as a mapping (tests, tools)


def resolve_tracking_uri(configured: str) -> str:
    """Make a relative sqlite URI absolute against the repository root.

    ``MLFLOW_TRACKING_URI`` in the environment wins, so a team can point every run at a server.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    prefix = "sqlite:///"
    if configured.startswith(prefix) and not configured[len(prefix):].startswith("/"):
        return prefix + str(project_root() / configured[len(prefix):])
    return configured


def is_local_store(uri: str) -> bool:
    """True for a store on this machine (sqlite, a file path), False for a tracking server."""
    return not uri.startswith(("http://", "https://", "databricks"))


def connect(config: MlflowConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id.

    With a local store the experiment is created with an absolute artifact location under the
    repository root, so artifacts of runs started in a temporary experiment copy land in the
    same place. With a tracking server the server chooses (its ``--artifacts-destination``, an
    object store a team shares): a client-local location would keep the model files on the
    training machine, where no other machine can load them.
    """
    import mlflow

    section = MlflowSection.parse(config)
    uri = resolve_tracking_uri(section.tracking_uri)
    mlflow.set_tracking_uri(uri)
    name = section.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (project_root() / "mlruns" / name).as_uri() if is_local_store(uri) else None
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
            pass
    return mlflow.set_experiment(name).experiment_id


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``, the shape MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_tags(git_revision: str) -> dict[str, str]:
    """Tags that tie an MLflow run to the code and the DVC experiment that produced it."""
    tags = {"git_commit": git_revision, "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "workspace")}
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc_exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def log_training_run(
    config: MlflowConfig,
    model_name: str,
    pipeline: Any,
    input_example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float | None],
    tags: dict[str, str],
    package_dir: Path,
    pip_requirements: list[str],
    trusted_types: list[str],
    task: Task | None = None,
) -> dict[str, str]:
    """Log params, metrics, tags and the model (registered under ``model_name``) as one run.

    The model's signature is its ``task``'s output on ``input_example`` (binary: the positive
    class's probability, also without a task; multiclass: one probability per class; regression:
    the value). Metrics that are None (undefined on these rows) are not logged. Returns the run id
    and the new registered model version.
    """
    import mlflow
    from mlflow.models import infer_signature

    output = (task.predict(pipeline, input_example) if task is not None
              else pipeline.predict_proba(input_example)[:, 1])
    connect(config)
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_params(flatten(params))
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        signature = infer_signature(input_example, output)
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=input_example,
            serialization_format="skops",
            skops_trusted_types=trusted_types,
            pip_requirements=pip_requirements,
            registered_model_name=model_name,
        )
        mlflow.log_artifacts(str(package_dir), artifact_path=PACKAGE_ARTIFACT)
    version = str(info.registered_model_version)
    logger.info("MLflow run %s registered %s version %s", run.info.run_id, model_name, version)
    return {"run_id": run.info.run_id, "model_version": version}


def log_evaluation(config: MlflowConfig, run_id: str, metrics: dict[str, float], artifacts: list[Path]) -> None:
    """Add test-set metrics and evaluation files to the training run they belong to."""
    import mlflow

    connect(config)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="evaluation")


def champion_version(config: MlflowConfig, model_name: str) -> Any | None:
    """The registered model version holding the ``champion`` alias, or None if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    connect(config)
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def download_package(config: MlflowConfig, run_id: str, destination: Path) -> Path:
    """Fetch the skops model, checksum, spec and card a training run logged."""
    import mlflow

    connect(config)
    destination.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=PACKAGE_ARTIFACT, dst_path=str(destination)
    )
    return Path(local)


def set_champion(config: MlflowConfig, model_name: str, version: str, tags: dict[str, str]) -> None:
    """Point the ``champion`` alias at ``version`` and record why on the version."""
    import mlflow

    connect(config)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def set_challenger(config: MlflowConfig, model_name: str, version: str | None) -> None:
    """Point the ``challenger`` alias at ``version``, or remove it (None)."""
    import mlflow

    connect(config)
    client = mlflow.MlflowClient()
    if version is None:
        try:
            client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
        except mlflow.exceptions.MlflowException:
            logger.info("no %s alias to remove", CHALLENGER_ALIAS)
    else:
        client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)


def tag_action(config: MlflowConfig, item: dict[str, Any]) -> None:
    """Write a deployment-history entry onto the MLflow model version(s) it is about."""
    import mlflow

    connect(config)
    client = mlflow.MlflowClient()
    name, reason = item["model_name"], item["why"][:MAX_TAG_LENGTH]
    tags = {"last_action": item["action"], "last_action_at": item["at"],
            "last_action_by": item["who"], "last_action_reason": reason}
    if item.get("model_tag"):
        tags["model_tag"] = item["model_tag"]
    for key, value in tags.items():
        client.set_model_version_tag(name, item["to_version"], key, value)
    if item["action"] == "rollback" and item["from_version"] not in (None, item["to_version"]):
        for key, value in {"rolled_back_at": item["at"], "rolled_back_by": item["who"],
                           "rolled_back_reason": reason}.items():
            client.set_model_version_tag(name, item["from_version"], key, value)


def version_tags(config: MlflowConfig, model_name: str, version: str) -> dict[str, str] | None:
    """The tags of a registered model version, or None when the registry has no such version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    connect(config)
    try:
        return dict(mlflow.MlflowClient().get_model_version(model_name, version).tags)
    except MlflowException:
        return None
