"""Package a trained model as a BentoML model plus a bento, and export the bento as one archive.

The BentoML store is wherever ``BENTOML_HOME`` points (the caller sets it). The bento pins the
exact model version through the ``model_tag`` bento argument read by
:mod:`mlops_template.serving.service`, and references it as a ``BentoModel`` so the model ships inside the
exported archive. Beside it, the ``model_sha256`` argument records the skops file's digest: the
service checks the model against that, not against the ``.sha256`` file in the model's own
directory, which whoever alters the stored model can rewrite too.

Beside the trained files the BentoML model holds the contract, ``serving.json`` (the task, its
classes, the training target's summary, and for a binary model the threshold and class names) and,
when the evaluate stage wrote it, ``importance.json`` (each input column's permutation importance).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.artifacts import ModelIntegrityError, checksum_path
from mlops_template.core.contract import load_contract
from mlops_template.core.io import read_json, sha256_of
from mlops_template.core.package_files import (
    CONTRACT_FILE,
    IMPORTANCE_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    SERVING_FILE,
    TRAINED_FILES,
)

logger = logging.getLogger(__name__)

SERVICE_MODULE = "mlops_template.serving.service"
SERVICE_IMPORT = f"{SERVICE_MODULE}:PredictionService"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SHIPPED = ("__init__.py", "core/*.py", "core/tasks/*.py", "serving/*.py")  # what the bento runs; nothing offline
# The hashed serving lock (scripts/lock.py): the bento's env/python/requirements.txt keeps its
# hashes, so an image BentoML builds from the bento installs exactly these files.
REQUIREMENTS_FILE = PACKAGE_DIR.parent / "constraints-serve.txt"
MODEL_FILES = TRAINED_FILES
IMPORTANCE_SOURCE = paths.METRICS / IMPORTANCE_FILE  # the evaluate stage's, of the candidate it scored


def _verified_model_sha256(model_dir: Path) -> str:
    """The model's sha256, refusing to package a model whose checksum file disagrees."""
    model_path = model_dir / MODEL_FILE
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks {missing}")
    expected = checksum_path(model_path).read_text(encoding="utf-8").split()[0]
    actual = sha256_of(model_path)
    if actual != expected:
        raise ModelIntegrityError(f"{model_path} has sha256 {actual}, expected {expected}")
    return actual


def _serving_config(contract_path: Path, threshold: float | None, labels: dict[str, str],
                    model_dir: Path | None = None, decision_values: list[list[float]] | None = None) -> dict:
    """What the service answers with: the task, its classes, the training target's summary, the threshold.

    ``target_summary`` is the model card's ``training_data.target`` (serving buckets its prediction
    histogram by it; None without a card that records one). A binary model also names its positive
    and negative class; ``threshold`` is None for a task without one. ``decision_values``, the
    multiclass value table evaluate answered by (``evaluate.class_values``), is recorded when set.
    """
    contract = load_contract(contract_path)
    card_path = None if model_dir is None else Path(model_dir) / MODEL_CARD_FILE
    card = read_json(card_path) if card_path is not None and card_path.exists() else {}
    config: dict[str, Any] = {
        "task": contract.task,
        "classes": list(contract.classes),
        "target_summary": (card.get("training_data") or {}).get("target"),
        "threshold": None if threshold is None else float(threshold),
    }
    if contract.is_binary:
        config |= {"positive_class": contract.positive_class, "negative_class": contract.negative_class}
    if decision_values is not None:
        config["decision_values"] = decision_values
    config["model_version"] = labels.get("model_version")
    return config


def save_bento_model(
    model_dir: Path, contract_path: Path, serving: dict, model_name: str,
    labels: dict[str, str], sha256: str, importance: Path | None = None,
) -> str:
    """Copy model files, contract, serving config and importance (if given) into a new BentoML model; its tag."""
    import bentoml

    # BentoML refuses None among metadata (a task without threshold, a card without target summary).
    metadata = {**{k: v for k, v in serving.items() if v is not None}, "sha256": sha256}
    with bentoml.models.create(name=model_name, labels=labels, metadata=metadata) as bento_model:
        target = Path(bento_model.path)
        for name in MODEL_FILES:
            shutil.copy2(model_dir / name, target / name)
        shutil.copy2(contract_path, target / CONTRACT_FILE)
        (target / SERVING_FILE).write_text(json.dumps(serving, indent=2) + "\n", encoding="utf-8")
        if importance is not None:
            shutil.copy2(importance, target / IMPORTANCE_FILE)
    logger.info("saved BentoML model %s", bento_model.tag)
    return str(bento_model.tag)


def _build_context(directory: Path) -> None:
    """A minimal build context: the shipped package sources and the serving requirements only."""
    for pattern in SHIPPED:
        for source in PACKAGE_DIR.glob(pattern):
            target = directory / PACKAGE_DIR.name / source.relative_to(PACKAGE_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if REQUIREMENTS_FILE.exists():
        shutil.copy2(REQUIREMENTS_FILE, directory / REQUIREMENTS_FILE.name)


def build_bento(model_tag: str, service_name: str, labels: dict[str, str], model_sha256: str) -> str:
    """Build the bento for the service, pinned to ``model_tag`` and its digest; return the bento tag."""
    import bentoml

    python: dict[str, Any] = {"lock_packages": False}
    if REQUIREMENTS_FILE.exists():
        python["requirements_txt"] = REQUIREMENTS_FILE.name
    # The build imports the service, which reads its model at import: drop a copy imported
    # earlier in this process so it sees the model just saved.
    sys.modules.pop(SERVICE_MODULE, None)
    with tempfile.TemporaryDirectory(prefix="bento-ctx-") as ctx:
        _build_context(Path(ctx))
        bento = bentoml.bentos.build(
            service=SERVICE_IMPORT,
            name=service_name,
            labels=labels,
            include=[*(f"{PACKAGE_DIR.name}/{pattern}" for pattern in SHIPPED), REQUIREMENTS_FILE.name],
            python=python,
            build_ctx=ctx,
            args={"model_tag": model_tag, "model_sha256": model_sha256},
        )
    logger.info("built bento %s", bento.tag)
    return str(bento.tag)


def export_archive(bento_tag: str, archive: Path) -> Path:
    """Export the bento (models included) to the file ``archive``, atomically.

    The archive is written under a temporary name and renamed, so a reader (``docker build``)
    never sees a partial file.
    """
    import bentoml

    archive = Path(archive).resolve()  # export_bento reads a relative path as relative to "/"
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp.bento")
    tmp.unlink(missing_ok=True)
    bentoml.bentos.export_bento(bento_tag, str(tmp))
    tmp.replace(archive)
    return archive


def package_model(
    model_dir: Path,
    contract_path: Path,
    threshold: float | None,
    model_name: str,
    service_name: str,
    labels: dict[str, str],
    archive: Path,
    importance: Path | None = IMPORTANCE_SOURCE,
    decision_values: list[list[float]] | None = None,
) -> dict:
    """Save the model to the BentoML store, build its bento and export it to ``archive``.

    ``threshold`` is the binary decision threshold (None for other tasks), ``decision_values`` the
    multiclass value table answers are decided by (None: the most probable class); ``importance``, the
    evaluate stage's column importance, ships with the model when that file exists.
    Returns ``bento_tag``, ``model_tag``, ``sha256`` (of the archive), ``model_sha256`` and
    ``archive`` (its path), for the deploy stage to record.
    """
    model_dir, contract_path = Path(model_dir), Path(contract_path)
    labels = {str(k): str(v) for k, v in labels.items()}
    model_sha256 = _verified_model_sha256(model_dir)
    serving = _serving_config(contract_path, threshold, labels, model_dir, decision_values)
    shipped = importance if importance is not None and Path(importance).is_file() else None
    model_tag = save_bento_model(
        model_dir, contract_path, serving, model_name, labels, model_sha256, shipped
    )
    bento_tag = build_bento(model_tag, service_name, labels, model_sha256)
    archive = export_archive(bento_tag, archive)
    return {
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "sha256": sha256_of(archive),
        "model_sha256": model_sha256,
        "archive": str(archive),
    }
