"""Package a trained model as a BentoML model plus a bento, and export the bento as one archive.

The BentoML store is wherever ``BENTOML_HOME`` points (the caller sets it). The bento pins the
exact model version through the ``model_tag`` bento argument read by
:mod:`mlops_template.service`, and references it as a ``BentoModel`` so the model ships inside the
exported archive.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops_template.contract import load_contract
from mlops_template.model import ModelIntegrityError, checksum_path, sha256_of

logger = logging.getLogger(__name__)

SERVICE_IMPORT = "mlops_template.service:PredictionService"
SERVICE_MODULE = "mlops_template.service"
PACKAGE_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = PACKAGE_DIR.parent / "requirements-serve.txt"
MODEL_FILES = ("model.skops", "model.skops.sha256", "feature_spec.json", "model_card.json")


def _verified_model_sha256(model_dir: Path) -> str:
    """The model's sha256, refusing to package a model whose checksum file disagrees."""
    model_path = model_dir / "model.skops"
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks {missing}")
    expected = checksum_path(model_path).read_text(encoding="utf-8").split()[0]
    actual = sha256_of(model_path)
    if actual != expected:
        raise ModelIntegrityError(f"{model_path} has sha256 {actual}, expected {expected}")
    return actual


def _serving_config(contract_path: Path, threshold: float, labels: dict[str, str]) -> dict:
    """Threshold and class names the service labels predictions with."""
    contract = load_contract(contract_path)
    allowed = contract.target_spec.allowed or ()
    negatives = [v for v in allowed if v != contract.positive_class]
    return {
        "threshold": float(threshold),
        "positive_class": contract.positive_class,
        "negative_class": negatives[0] if negatives else f"not {contract.positive_class}",
        "model_version": labels.get("model_version"),
    }


def save_bento_model(
    model_dir: Path, contract_path: Path, serving: dict, model_name: str,
    labels: dict[str, str], sha256: str,
) -> str:
    """Copy model files, contract and serving config into a new BentoML model; return its tag."""
    import bentoml

    metadata = {**serving, "sha256": sha256}
    with bentoml.models.create(name=model_name, labels=labels, metadata=metadata) as bento_model:
        target = Path(bento_model.path)
        for name in MODEL_FILES:
            shutil.copy2(model_dir / name, target / name)
        shutil.copy2(contract_path, target / "contract.yaml")
        (target / "serving.json").write_text(json.dumps(serving, indent=2) + "\n", encoding="utf-8")
    logger.info("saved BentoML model %s", bento_model.tag)
    return str(bento_model.tag)


def _build_context(directory: Path) -> None:
    """A minimal build context: the package sources and the serving requirements only."""
    package = directory / PACKAGE_DIR.name
    package.mkdir()
    for source in PACKAGE_DIR.glob("*.py"):
        shutil.copy2(source, package / source.name)
    if REQUIREMENTS_FILE.exists():
        shutil.copy2(REQUIREMENTS_FILE, directory / REQUIREMENTS_FILE.name)


def build_bento(model_tag: str, service_name: str, labels: dict[str, str]) -> str:
    """Build the bento for the service, pinned to ``model_tag``; return the bento tag."""
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
            include=[f"{PACKAGE_DIR.name}/*.py", REQUIREMENTS_FILE.name],
            python=python,
            build_ctx=ctx,
            args={"model_tag": model_tag},
        )
    logger.info("built bento %s", bento.tag)
    return str(bento.tag)


def export_archive(bento_tag: str, service_name: str, export_dir: Path) -> Path:
    """Export the bento (models included) to ``export_dir/<service_name>.bento`` atomically.

    The archive is written under a temporary name and renamed, so a reader never sees a partial
    file; other ``*.bento`` archives in ``export_dir`` are then removed as outdated.
    """
    import bentoml

    export_dir = export_dir.resolve()  # export_bento reads a relative path as relative to "/"
    export_dir.mkdir(parents=True, exist_ok=True)
    final = export_dir / f"{service_name}.bento"
    tmp = export_dir / f".{service_name}.tmp.bento"
    tmp.unlink(missing_ok=True)
    bentoml.bentos.export_bento(bento_tag, str(tmp))
    tmp.replace(final)
    for old in export_dir.glob("*.bento"):
        if old != final:
            old.unlink()
            logger.info("removed outdated archive %s", old)
    return final


def package_model(
    model_dir: Path,
    contract_path: Path,
    threshold: float,
    model_name: str,
    service_name: str,
    labels: dict[str, str],
    export_dir: Path,
) -> dict:
    """Save the model to the BentoML store, build its bento and export it as one archive.

    Returns ``bento_tag``, ``model_tag``, ``sha256`` (of the archive), ``model_sha256`` and
    ``archive`` (its path), for the deploy stage to record.
    """
    model_dir, contract_path, export_dir = Path(model_dir), Path(contract_path), Path(export_dir)
    labels = {str(k): str(v) for k, v in labels.items()}
    model_sha256 = _verified_model_sha256(model_dir)
    serving = _serving_config(contract_path, threshold, labels)
    model_tag = save_bento_model(
        model_dir, contract_path, serving, model_name, labels, model_sha256
    )
    bento_tag = build_bento(model_tag, service_name, labels)
    archive = export_archive(bento_tag, service_name, export_dir)
    return {
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "sha256": sha256_of(archive),
        "model_sha256": model_sha256,
        "archive": str(archive),
    }
