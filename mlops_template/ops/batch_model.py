"""Which model batch scoring uses, verified before anything in it is built.

By default the champion of ``deployments/champion.json``, the git-tracked record the deploy and
rollback commands write: its BentoML model from the local store (``BENTOML_HOME``, default
``.bentoml``), else its MLflow run's package, loaded only if its ``model.skops`` has the sha256 the
record holds. The store and the registry can be written by more hands than the repository, and
loading a model file builds objects, so nothing they hold is loaded unchecked
(:func:`mlops_template.core.artifacts.load_model` checks the digest on the bytes it loads, then
the types). The record's threshold wins over the package's ``serving.json``. A local package
(``--model models/candidate``) is checked against its own checksum file only, and
:attr:`ScoringModel.source` says so in the command's output.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.artifacts import ModelIntegrityError, load_model
from mlops_template.core.config import project_root
from mlops_template.core.contract import Contract, load_contract
from mlops_template.core.exitcodes import ServiceUnavailable, UserError
from mlops_template.core.features import FeatureSpec
from mlops_template.core.io import read_json
from mlops_template.core.package_files import (
    CHECKSUM_FILE,
    CONTRACT_FILE,
    FEATURE_SPEC_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    SERVING_FILE,
)
from mlops_template.core.tasks import Task, task_of
from mlops_template.ops import records

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringModel:
    """A verified model and what scoring with it needs; ``source`` says where it came from and what vouched."""

    model: Any
    spec: FeatureSpec
    contract: Contract
    task: Task
    threshold: float | None
    version: str
    source: str

    def describe(self) -> str:
        """One phrase for the summary: the model, its task and (binary) the threshold it labels with."""
        text = f"{self.source}; task {self.task.name}"
        if self.contract.is_binary:
            text += (f", threshold {self.threshold:g}" if self.threshold is not None
                     else ", the task's default threshold (none recorded; --threshold sets one)")
        return text


# --- which model ---------------------------------------------------------------------------------

def load_package(directory: Path, expected_sha256: str | None, source: str, version: str | None = None,
                 threshold: float | None = None) -> ScoringModel:
    """The model package in ``directory``, its skops file checked (digest, then types) before it is built.

    ``expected_sha256`` comes from a record the package's writer cannot rewrite (None: the
    package's own checksum file). The contract is the package's copy (a BentoML model holds one),
    else the one ``params.yaml`` names; ``threshold`` (from a record) wins over ``serving.json``'s.
    """
    model = load_model(directory / MODEL_FILE, expected_sha256)
    spec = FeatureSpec.from_json(directory / FEATURE_SPEC_FILE)
    contract = load_contract(directory / CONTRACT_FILE if (directory / CONTRACT_FILE).exists() else _params_contract())
    card, serving = _json(directory / MODEL_CARD_FILE), _json(directory / SERVING_FILE)
    _check_fits(card, spec, contract, directory)
    packaged = serving.get("threshold")
    if threshold is not None and packaged is not None and float(packaged) != float(threshold):
        logger.warning("%s says threshold %s, the record %s: the record's is used", SERVING_FILE, packaged, threshold)
    if threshold is None and packaged is not None:
        threshold = float(packaged)
    version = version or str(serving.get("model_version") or (card.get("mlflow") or {}).get("model_version")
                             or "unversioned")
    task = task_of(contract, serving.get("decision_values"))
    return ScoringModel(model, spec, contract, task, threshold, version, source)


def champion_model(workdir: Path, record_path: Path = paths.CHAMPION_RECORD) -> ScoringModel:
    """The champion ``record_path`` records, from the BentoML store or else MLflow, verified by its sha256.

    UserError (65) when no champion is recorded; ModelIntegrityError (1) when the record holds no
    digest or the model found is not the recorded one. ``workdir`` receives an MLflow download.
    """
    record = records.champion(record_path)
    if record is None:
        raise UserError(f"no champion is recorded in {record_path}: deploy one (dvc repro), or score a local "
                        "model package with --model PATH")
    name, version, expected = record.get("model_name"), str(record.get("model_version")), record.get("sha256")
    if not expected:
        raise ModelIntegrityError(f"{record_path} records no sha256 for champion {name} v{version}: refusing to "
                                  "load a model nothing vouches for")
    directory, where = _champion_directory(record, workdir)
    threshold = record.get("threshold")
    return load_package(directory, str(expected), version=version,
                        threshold=None if threshold is None else float(threshold),
                        source=f"champion {name} v{version} from {where}, sha256 {str(expected)[:12]}... verified "
                               f"against {record_path}")


def _champion_directory(record: dict[str, Any], workdir: Path) -> tuple[Path, str]:
    """Where the champion's files are: its BentoML model in the local store, else its MLflow run's package."""
    os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
    home, tag = os.environ["BENTOML_HOME"], record.get("model_tag")
    if tag:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            return Path(bentoml.models.get(str(tag)).path), f"the BentoML store ({tag})"
        except NotFound:
            logger.info("champion %s is not in the BentoML store %s: fetching it from MLflow", tag, home)
    run_id = record.get("mlflow_run_id")
    if not run_id:
        raise UserError(f"champion {tag} is not in the BentoML store {home} and its record names no MLflow run")
    from mlops_template.core.params import load as load_params
    from mlops_template.pipeline import tracking

    config = load_params().mlflow
    try:
        return tracking.download_package(config, str(run_id), workdir), f"MLflow run {run_id}"
    except Exception as exc:  # MLflow raises many kinds; whether the service answers decides the exit code
        from mlops_template.ops.process import shared_services_down

        down = shared_services_down(config)
        if down is not None:
            raise ServiceUnavailable(f"champion {tag} is not in the BentoML store and {down}") from exc
        raise UserError(f"champion {tag} is neither in the BentoML store {home} nor in MLflow run {run_id}: "
                        f"{' '.join(str(exc).split())}") from exc


def local_model(directory: Path) -> ScoringModel:
    """A model package folder (``models/candidate``, a BentoML model's folder), checked by its own checksum file."""
    if not (directory / MODEL_FILE).is_file():
        raise UserError(f"--model {directory}: no {MODEL_FILE} there (give a model package folder such as "
                        f"{paths.CANDIDATE})")
    scoring = load_package(directory, None, source=f"local package {directory}")
    digest = (directory / CHECKSUM_FILE).read_text(encoding="utf-8").split()[0]
    source = (f"local package {directory}, sha256 {digest[:12]}... checked against its own {CHECKSUM_FILE} only "
              "(no deployment record vouches for it)")
    return dataclasses.replace(scoring, source=source)


def _params_contract() -> Path:
    """The contract ``params.yaml`` names (``data.contract``), for a package that carries none."""
    if not paths.PARAMS.exists():
        raise UserError(f"the model package holds no {CONTRACT_FILE} and there is no {paths.PARAMS} in "
                        f"{Path.cwd()} naming one: run from the repository root")
    from mlops_template.core.params import load as load_params

    return Path(load_params().data.contract)


def _json(path: Path) -> dict[str, Any]:
    """A package's JSON file as a mapping ({} when absent); UserError when it is not a JSON object."""
    if not path.exists():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


def _check_fits(card: dict[str, Any], spec: FeatureSpec, contract: Contract, directory: Path) -> None:
    """Refuse a contract the model was not trained for: another task, other classes, missing inputs."""
    problems = []
    if "task" in card and card["task"] != contract.task:
        problems.append(f"the model was trained for a {card['task']} task, the contract declares {contract.task}")
    if card.get("classes") and list(card["classes"]) != list(contract.classes):
        problems.append(f"the model's classes {card['classes']} are not the contract's {list(contract.classes)}")
    if card.get("positive_class") is not None and contract.positive_class is not None \
            and str(card["positive_class"]) != contract.positive_class:
        problems.append(f"the model's positive class {card['positive_class']!r} is not the contract's "
                        f"{contract.positive_class!r}")
    inputs = {c.name for c in contract.input_columns}
    unknown = [c for c in spec.source_columns if c not in inputs]
    if unknown:
        problems.append(f"the model reads {unknown}, which are not input columns of the contract")
    if problems:
        raise UserError(f"model package {directory} does not fit contract {contract.name!r}: {'; '.join(problems)}")
