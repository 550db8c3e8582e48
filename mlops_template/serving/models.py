"""Loading and verifying served models from the BentoML store.

A BentoML model directory (written by :mod:`mlops_template.pipeline.packaging`) holds the skops
pipeline and its sha256, the feature spec, the contract and the serving config (``serving.json``:
the task, its classes and the training target's summary; for binary, the threshold and class
names). A package whose ``serving.json`` names no task predates tasks and is binary. The
pipeline is loaded only after its checksum is verified against a digest the
caller takes from a record the model's writer cannot also rewrite: the bento's ``model_sha256``
argument (written by packaging beside ``model_tag``) for the pinned model, the routing document's
``model_sha256`` for the models it names. Only a model served outside a bento without routing
(``MODEL_TAG``, development) falls back to the ``.sha256`` file in its own directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound as NotInStore

from mlops_template.core.artifacts import ModelIntegrityError, load_model
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec
from mlops_template.core.io import sha256_of
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_FILE, SERVING_FILE
from mlops_template.core.tasks import TASKS, MulticlassTask, Task
from mlops_template.serving import routing
from mlops_template.serving.microbatch import MicroBatcher
from mlops_template.serving.scoring import ModelScorer, contract_sample
from mlops_template.serving.settings import ServingSettings

logger = logging.getLogger(__name__)


def model_reference(settings: ServingSettings) -> str:
    """The model tag to serve: bento argument, else ``MODEL_TAG``, else ``MODEL_NAME:latest``."""
    pinned = getattr(bentoml.use_arguments(), "model_tag", None)
    if pinned:
        return str(pinned)
    return settings.model_tag or f"{settings.model_name}:latest"


def pinned_sha256() -> str | None:
    """The skops digest the bento pins beside ``model_tag`` (None outside a bento, or an older one)."""
    recorded = getattr(bentoml.use_arguments(), "model_sha256", None)
    return str(recorded) if recorded else None


def read_serving_config(model_dir: Path) -> dict[str, Any]:
    """The package's ``serving.json``."""
    config: dict[str, Any] = json.loads((model_dir / SERVING_FILE).read_text(encoding="utf-8"))
    return config


def served_task(serving: dict[str, Any], contract: Contract) -> Task:
    """The task a package answers for, from its ``serving.json`` (no ``task``: binary, as packaged
    before tasks), with its classes and positive class; ValueError when it contradicts the contract.

    The request model is the contract's, so a package of another task than its contract (a
    regression model behind a classification contract) is refused rather than served.
    """
    name = str(serving.get("task") or "binary")
    if name not in TASKS:
        raise ValueError(f"serving.json names task {name!r}, not one of {sorted(TASKS)}")
    if name != contract.task:
        raise ValueError(f"serving.json names task {name!r} but the contract's task is {contract.task!r}")
    classes = tuple(str(c) for c in serving.get("classes") or contract.classes)
    positive = serving.get("positive_class")
    if name == MulticlassTask.name:  # answers decided by evaluate's value table, when it shipped one
        return MulticlassTask(contract.target, classes, decision_values=serving.get("decision_values"))
    return TASKS[name](contract.target, classes, None if positive is None else str(positive))


class ModelDigestMismatch(ModelIntegrityError):
    """A model's skops file is not the one its record (bento argument, routing document) names."""


class ModelUnavailable(RuntimeError):
    """A model the routing document names could not be loaded now (missing, unreadable, not
    fetched): retried, unlike a trust refusal."""


@dataclass(eq=False)
class ServedModel:
    """One verified model ready to score, with its task and micro-batcher (set by the service).

    ``threshold`` is the binary decision threshold (None for other tasks); ``target_summary`` the
    training target's (regression histogram buckets); both from ``serving.json``.
    """

    tag: str
    version: str
    sha256: str
    task: Task
    threshold: float | None
    scorer: ModelScorer
    target_summary: dict[str, Any] | None = None
    batcher: MicroBatcher | None = None

    def answers(self, output: Any) -> list[dict[str, Any]]:
        """The response body of each row (without ``model_version``), from the task's output."""
        return self.task.answers(output, self.threshold)


@dataclass(frozen=True)
class Serving:
    """The models serving right now; replaced as a whole, never modified in place."""

    champion: ServedModel
    challenger: ServedModel | None = None
    canary_share: float = 0.0

    def pick(self, key: str) -> ServedModel:
        """The model that answers a request with routing key ``key``."""
        if self.challenger is not None and routing.routes_to_challenger(key, self.canary_share):
            return self.challenger
        return self.champion

    def roles(self) -> list[tuple[ServedModel, str]]:
        """Each served model with its role, champion first."""
        pairs = [(self.champion, "champion")]
        if self.challenger is not None:
            pairs.append((self.challenger, "challenger"))
        return pairs


def load_served_model(tag: str, contract: Contract, use_replay: bool,
                      expected_sha256: str | None = None) -> ServedModel:
    """Load and verify one model from the BentoML store (ModelIntegrityError, NotFound, ...).

    ``expected_sha256`` is the digest from the caller's record; without one the ``.sha256`` file
    beside the model is the reference (a development path, logged).
    """
    stored = bentoml.models.get(tag)
    model_dir = Path(stored.path)
    if expected_sha256 is None:
        logger.warning("model %s: no recorded digest, checked against its own checksum file only", tag)
    else:
        actual = sha256_of(model_dir / MODEL_FILE) if (model_dir / MODEL_FILE).exists() else None
        if actual is not None and actual != expected_sha256:
            raise ModelDigestMismatch(f"model {tag} has sha256 {actual}, its record says {expected_sha256}: "
                                      "refusing to load")
    serving = read_serving_config(model_dir)
    task = served_task(serving, contract)
    threshold = serving.get("threshold")
    pipeline = load_model(model_dir / MODEL_FILE, expected_sha256=expected_sha256)
    spec = FeatureSpec.from_json(model_dir / FEATURE_SPEC_FILE)
    scorer = ModelScorer(pipeline, spec, contract, use_replay=use_replay, task=task)
    scorer.output(contract_sample(contract, rows=2))  # a model the task cannot read fails here, not per request
    logger.info("model %s (%s) scores with %s", stored.tag, task.name, scorer.describe())
    return ServedModel(
        tag=str(stored.tag),
        version=str(serving.get("model_version") or stored.tag.version),
        sha256=expected_sha256 or str(stored.info.metadata.get("sha256", "")),
        task=task,
        threshold=None if threshold is None else float(threshold),
        scorer=scorer,
        target_summary=serving.get("target_summary"),
    )


def describe_load_failure(exc: BaseException) -> str:
    """Why a model did not load, briefly (no paths): "failed its integrity check (...)" and the like."""
    if isinstance(exc, ModelDigestMismatch):
        return "failed its integrity check (sha256 mismatch)"
    if isinstance(exc, routing.RoutingRefused):
        return f"was refused ({exc.reason})"
    if isinstance(exc, ModelIntegrityError):
        text = str(exc)
        if "sha256" in text:
            return "failed its integrity check (sha256 mismatch)"
        if "checksum file" in text:
            return "failed its integrity check (no checksum file)"
        if "does not exist" in text:
            return "failed its integrity check (model file missing)"
        return "failed its integrity check (untrusted types)"
    if isinstance(exc, NotInStore):
        return "is not in the model store"
    return f"failed to load ({type(exc).__name__})"


def is_explained_load_failure(exc: BaseException) -> bool:
    """A failure :func:`describe_load_failure` explains fully (its traceback would only be noise)."""
    return isinstance(exc, (ModelIntegrityError, NotInStore, routing.RoutingRefused))
