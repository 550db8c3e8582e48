"""Model artifacts: skops files (no pickle) that may hold only an exact list of types.

Written by the train stage, read by evaluate, packaging and the service, so this module is the
one place that decides what a trustworthy model file is. Loading reads the file once and then,
on those bytes and before any object is built:

1. checks its sha256 against the expected digest (an argument from a trusted record, else the
   ``.sha256`` file beside it);
2. reads the skops schema (JSON only: skops' ``get_untrusted_types`` builds its node tree
   without importing a module or constructing an object) and lists every type name it asks
   for, with the skops loader that would build it;
3. refuses the file, naming the types, when any (type, loader) pair is outside
   :data:`ALLOWED_MODEL_TYPES`, or any type is outside the list recorded when the model was
   trained (an argument, else ``model_types`` in the ``model_card.json`` beside it);
4. only then lets skops build it, trusting exactly the names it reported.

:data:`ALLOWED_MODEL_TYPES` is fixed in code: the exact types the pipelines of
:func:`mlops_template.pipeline.training.build_pipeline` hold for every task (classifiers and
regressors), never a module prefix (trusting
``builtins.`` admits ``builtins.eval``). ``tests/unit/core/test_model_types.py`` re-derives it
by fitting every estimator on data of several shapes, so it cannot silently go stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlops_template.core.io import sha256_of
from mlops_template.core.package_files import CHECKSUM_SUFFIX, MODEL_CARD_FILE

logger = logging.getLogger(__name__)

CARD_TYPES_KEY = "model_types"

# Type name -> the skops loaders that may build it. Derived by tests/unit/core/test_model_types.py
# (run it as a script to print the list); edit only together with that test.
ALLOWED_MODEL_TYPES: dict[str, frozenset[str]] = {
    "builtins.dict": frozenset({"DictNode"}),
    # LightGBM's model text with a parity probe: plain data, parsed by LightGBM (core/boosting.py)
    "mlops_template.core.boosting.LightGBMModel": frozenset({"ObjectNode"}),
    "builtins.int": frozenset({"TypeNode"}),  # the type int itself (OrdinalEncoder's infrequent codes)
    "builtins.list": frozenset({"ListNode"}),
    "builtins.slice": frozenset({"SliceNode"}),
    "builtins.str": frozenset({"JsonNode", "TypeNode"}),
    "builtins.tuple": frozenset({"TupleNode"}),
    "numpy.dtype": frozenset({"DTypeNode"}),
    "numpy.float64": frozenset({"NdArrayNode", "TypeNode"}),
    "numpy.int64": frozenset({"NdArrayNode"}),
    "numpy.ndarray": frozenset({"NdArrayNode"}),
    "numpy.random.PCG64": frozenset({"RandomGeneratorNode"}),
    "numpy.random._generator.Generator": frozenset({"RandomGeneratorNode"}),
    "numpy.uint64": frozenset({"NdArrayNode"}),
    "sklearn._loss._loss.CyHalfBinomialLoss": frozenset({"LossNode"}),
    "sklearn._loss._loss.CyHalfMultinomialLoss": frozenset({"LossNode"}),
    "sklearn._loss._loss.CyHalfSquaredError": frozenset({"LossNode"}),
    "sklearn._loss.link.IdentityLink": frozenset({"ObjectNode"}),
    "sklearn._loss.link.Interval": frozenset({"ObjectNode"}),
    "sklearn._loss.link.LogitLink": frozenset({"ObjectNode"}),
    "sklearn._loss.link.MultinomialLogit": frozenset({"ObjectNode"}),
    "sklearn._loss.loss.HalfBinomialLoss": frozenset({"ObjectNode"}),
    "sklearn._loss.loss.HalfMultinomialLoss": frozenset({"ObjectNode"}),
    "sklearn._loss.loss.HalfSquaredError": frozenset({"ObjectNode"}),
    "sklearn.compose._column_transformer.ColumnTransformer": frozenset({"ObjectNode"}),
    "sklearn.ensemble._forest.RandomForestClassifier": frozenset({"ObjectNode"}),
    "sklearn.ensemble._forest.RandomForestRegressor": frozenset({"ObjectNode"}),
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper": frozenset({"ObjectNode"}),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier":
        frozenset({"ObjectNode"}),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor":
        frozenset({"ObjectNode"}),
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": frozenset({"ObjectNode"}),
    "sklearn.impute._base.SimpleImputer": frozenset({"ObjectNode"}),
    "sklearn.linear_model._logistic.LogisticRegression": frozenset({"ObjectNode"}),
    "sklearn.linear_model._ridge.Ridge": frozenset({"ObjectNode"}),
    "sklearn.pipeline.Pipeline": frozenset({"ObjectNode"}),
    "sklearn.preprocessing._data.StandardScaler": frozenset({"ObjectNode"}),
    "sklearn.preprocessing._encoders.OneHotEncoder": frozenset({"ObjectNode"}),
    "sklearn.preprocessing._encoders.OrdinalEncoder": frozenset({"ObjectNode"}),
    # a ColumnTransformer's "passthrough": func None; any function it named would be a type of its own
    "sklearn.preprocessing._function_transformer.FunctionTransformer": frozenset({"ObjectNode"}),
    "sklearn.preprocessing._label.LabelEncoder": frozenset({"ObjectNode"}),
    "sklearn.tree._classes.DecisionTreeClassifier": frozenset({"ObjectNode"}),
    "sklearn.tree._classes.DecisionTreeRegressor": frozenset({"ObjectNode"}),
    "sklearn.tree._tree.Tree": frozenset({"TreeNode"}),
}


class ModelIntegrityError(RuntimeError):
    """A model file is missing, altered, or holds types that are not trusted."""


class UntrustedTypesError(ModelIntegrityError):
    """A model file asks for a type outside the allow-list or its recorded list (or is not skops)."""


def checksum_path(model_path: str | Path) -> Path:
    """Where the checksum of ``model_path`` is kept."""
    return Path(f"{model_path}{CHECKSUM_SUFFIX}")


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


def load_model(path: str | Path, expected_sha256: str | None = None,
               expected_types: Iterable[str] | None = None) -> Any:
    """Load a skops model after checking its digest and every type it holds (see module doc).

    ``expected_sha256`` should come from a record the artifact's writer cannot rewrite; without
    it the ``.sha256`` file beside the model is used. ``expected_types`` is the list recorded at
    training; without it, ``model_types`` of the model card beside the model, if any. Raises
    ModelIntegrityError, before any object is built, when a check fails.
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
    data = path.read_bytes()  # one read: the bytes checked are the bytes loaded
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model {path} has sha256 {actual}, expected {expected_sha256}: refusing to load"
        )
    if expected_types is None:
        expected_types = recorded_types(path.parent / MODEL_CARD_FILE)
    trusted = _checked_types(data, path, expected_types)
    return skops.io.loads(data, trusted=trusted)


def trusted_types(path: str | Path) -> list[str]:
    """The names skops must be told to trust to load ``path``, once every type is allowed.

    For MLflow's ``skops_trusted_types``. Some sklearn types (trees, HistGradientBoosting's
    TreePredictor) are never trusted by default because a crafted file could make them read
    out of bounds; the digest verified before loading is what rules that out here.
    """
    return _checked_types(Path(path).read_bytes(), Path(path), None)


def model_types(path: str | Path) -> list[str]:
    """Every type name the skops file at ``path`` asks for, sorted: what a model card records."""
    import skops.io

    path = Path(path)
    data = path.read_bytes()
    return sorted(set(schema_types(data, path)) | set(skops.io.get_untrusted_types(data=data)))


def recorded_types(card: Path) -> list[str] | None:
    """``model_types`` of a model card, or None when there is no card or it records none."""
    if not card.exists():
        return None
    try:
        recorded = json.loads(card.read_text(encoding="utf-8")).get(CARD_TYPES_KEY)
    except (OSError, ValueError, AttributeError) as exc:
        raise UntrustedTypesError(f"model card {card} cannot be read: {exc}") from exc
    if recorded is None:
        return None
    if not isinstance(recorded, list) or not all(isinstance(t, str) for t in recorded):
        raise UntrustedTypesError(f"model card {card}: {CARD_TYPES_KEY} is not a list of type names")
    return recorded


def _checked_types(data: bytes, path: Path, expected: Iterable[str] | None) -> list[str]:
    """skops' untrusted names for ``data`` after every check; ModelIntegrityError naming types."""
    import skops.io

    found = schema_types(data, path)
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # a crafted schema can raise anything skops' node classes raise
        raise UntrustedTypesError(f"model {path} is not a readable skops file: {exc}") from exc
    for name in untrusted:  # names skops derives itself (a bit generator's class, a method)
        found.setdefault(name, set())
    refused = sorted(name for name, loaders in found.items()
                     if name not in ALLOWED_MODEL_TYPES or not loaders <= ALLOWED_MODEL_TYPES[name])
    if refused:
        detail = [f"{n} (loader {sorted(found[n])})" if n in ALLOWED_MODEL_TYPES else n for n in refused]
        raise UntrustedTypesError(
            f"model {path} holds untrusted types outside the allow-list: {detail}: refusing to load")
    if expected is not None:
        unrecorded = sorted(set(found) - set(expected))
        if unrecorded:
            raise UntrustedTypesError(f"model {path} holds untrusted types its model card does not "
                                      f"record: {unrecorded}: refusing to load")
    return untrusted


def schema_types(data: bytes, path: str | Path) -> dict[str, set[str]]:
    """Type name -> skops loaders, for every node of the skops schema in ``data`` (JSON only).

    Each node of a skops schema is a JSON object with ``__loader__`` (the skops class that
    builds it), ``__module__`` and ``__class__``; a method node also names its function, and a
    random generator node the bit generator class it will call. A node that is not shaped so is
    refused, since skops would build it regardless of what this reader saw.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UntrustedTypesError(f"model {path} is not a readable skops file: {exc}") from exc
    found: dict[str, set[str]] = {}
    todo: list[Any] = [schema]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        todo.extend(item.values())
        if "__loader__" not in item:
            continue
        loader, module, name = item.get("__loader__"), item.get("__module__"), item.get("__class__")
        if not (isinstance(loader, str) and isinstance(module, str) and isinstance(name, str)):
            raise UntrustedTypesError(f"model {path} holds a malformed schema node: "
                                      f"{loader!r} {module!r}.{name!r}")
        found.setdefault(f"{module}.{name}", set()).add(loader)
        extra = _hidden_type(item, loader)
        if extra:
            found.setdefault(extra, set()).add(loader)
    return found


def _hidden_type(node: dict[str, Any], loader: str) -> str | None:
    """A name a node calls that is not its own type: a method's function, a bit generator."""
    content: Any = node.get("content")  # any JSON: read defensively below
    if loader == "MethodNode" and isinstance(content, dict):
        return f"{node['__module__']}.{node['__class__']}.{content.get('func')}"
    if loader == "RandomGeneratorNode":
        try:
            name = json.loads(content["bit_generator"]["content"]["bit_generator"]["content"])
        except (KeyError, TypeError, ValueError):
            return "numpy.random.<unreadable bit generator>"
        return f"numpy.random.{name}"
    return None
