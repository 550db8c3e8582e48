"""Model artifacts: skops files (no pickle) with a sha256 beside them; a mismatch refuses to load.

Written by the train stage, read by evaluate, packaging and the service, so this module is the
one place that decides what a trustworthy model file is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlops_template.core.io import sha256_of

logger = logging.getLogger(__name__)

# skops refuses any type outside these modules when it loads a model.
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class ModelIntegrityError(RuntimeError):
    """A model file is missing, altered, or holds types that are not trusted."""


def checksum_path(model_path: str | Path) -> Path:
    """Where the checksum of ``model_path`` is kept."""
    return Path(f"{model_path}.sha256")


def save_model(pipeline: Any, path: str | Path) -> str:
    """Write the pipeline with skops (no pickle) and its sha256 beside it; return the digest."""
    import skops.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    skops.io.dump(pipeline, tmp)
    tmp.replace(path)
    digest = sha256_of(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def load_model(path: str | Path, expected_sha256: str | None = None) -> Any:
    """Load a skops model after checking its checksum and that it holds only trusted types.

    The expected digest comes from the argument or, failing that, the ``.sha256`` file beside it.
    """
    import skops.io

    path = Path(path)
    if not path.exists():
        raise ModelIntegrityError(f"model file {path} does not exist")
    if expected_sha256 is None:
        sums = checksum_path(path)
        if not sums.exists():
            raise ModelIntegrityError(f"no checksum file {sums} for model {path}")
        expected_sha256 = sums.read_text(encoding="utf-8").split()[0]
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model {path} has sha256 {actual}, expected {expected_sha256}: refusing to load"
        )
    return skops.io.load(path, trusted=trusted_types(path))


def trusted_types(path: str | Path) -> list[str]:
    """The types skops must be told to trust to load ``path``: only sklearn/numpy/scipy ones.

    Some sklearn types (HistGradientBoosting's TreePredictor) are never trusted by default
    because a crafted file could make them read out of bounds; the checksum verified before
    loading is what rules that out here.
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if foreign:
        raise ModelIntegrityError(f"model {path} holds types outside sklearn/numpy/scipy: {foreign}")
    return untrusted
