"""Hand-written skops files that run code when loaded, as an attacker who can write a model store would.

A skops file is a zip holding ``schema.json``; each node names a skops loader and a type. A
``ConstructorFromReduceNode`` on ``builtins.eval`` calls ``eval`` with its content when skops
builds the object, so a loader that trusts every ``builtins.`` name runs the payload. The
payloads here only create a marker file, so a test can tell whether anything ran.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import skops.io._protocol as skops_protocol


def _text(value: str) -> dict[str, Any]:
    """A skops JSON node holding a string."""
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


def _calls(module: str, name: str, *args: dict[str, Any], loader: str = "ConstructorFromReduceNode") -> dict:
    """A node that calls ``module.name(*args)`` when skops constructs it."""
    return {"__class__": name, "__module__": module, "__loader__": loader,
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                        "content": list(args)}}


def hostile_schema(kind: str, marker: Path) -> dict[str, Any]:
    """The schema of a file whose loading creates ``marker``, by way of ``kind``.

    ``eval`` and ``exec`` call the builtin with Python source; ``os.system`` runs ``touch``;
    ``attrgetter`` hides an ``operator.attrgetter`` beside an eval; ``pipeline-eval`` puts the
    eval node inside an otherwise legitimate-looking Pipeline's attributes.
    """
    source = f"open({str(marker)!r}, 'w').write('payload ran')"
    if kind == "eval":
        root = _calls("builtins", "eval", _text(source))
    elif kind == "exec":
        root = _calls("builtins", "exec", _text(source))
    elif kind == "os.system":
        root = _calls("os", "system", _text(f"touch {marker}"))
    elif kind == "attrgetter":
        getter = {"__class__": "attrgetter", "__module__": "operator", "__loader__": "OperatorFuncNode",
                  "attrs": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                            "content": [_text("system")]}}
        root = {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                "content": [getter, _calls("builtins", "eval", _text(source))]}
    elif kind == "pipeline-eval":
        root = {"__class__": "Pipeline", "__module__": "sklearn.pipeline", "__loader__": "ObjectNode",
                "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                            "content": {"steps": _calls("builtins", "eval", _text(source))},
                            "key_types": {"__class__": "list", "__module__": "builtins",
                                          "__loader__": "ListNode",
                                          "content": [{"__class__": "str", "__module__": "builtins",
                                                       "__loader__": "TypeNode"}]}}}
    else:
        raise ValueError(f"unknown hostile model kind {kind!r}")
    return {**root, "protocol": skops_protocol.PROTOCOL, "_skops_version": "0.16.0"}


def hostile_model_bytes(kind: str, marker: Path) -> bytes:
    """A complete skops file (a zip with its schema) whose loading creates ``marker``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(hostile_schema(kind, marker)))
    return buffer.getvalue()


def write_hostile_model(path: Path, kind: str, marker: Path) -> str:
    """Replace ``path`` by a hostile model and write a matching ``.sha256`` beside it; the digest."""
    data = hostile_model_bytes(kind, marker)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest
