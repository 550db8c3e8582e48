"""What the service's OpenAPI document and answers say, beyond what BentoML derives itself.

Two patches of the BentoML service object, applied once at import by
:mod:`mlops_template.serving.service`: every API answers JSON (:func:`declare_json_responses`), and
the published document (``/docs.json``, the bento's ``openapi.yaml``) says what the request guard
enforces (:func:`document_openapi`). The second goes through BentoML's private ``bentoml_cattr``
(the only way to turn its attrs spec objects into plain dicts), pinned with BentoML in
requirements-serve.txt; ``tests/integration/serving/test_edges_more.py`` reads the result.
"""

from __future__ import annotations

from typing import Any

from mlops_template.serving.guard import ERROR_CODES, READYZ_PATH
from mlops_template.serving.schema import SERVICE_ERROR_CODES, document_predict, document_readyz


def declare_json_responses(service: Any) -> None:
    """Fix the media type of every API's answer to JSON, once.

    BentoML otherwise derives the media type of a list answer from its JSON schema, which it
    rebuilds on every response, on the event loop: a large share of a constant endpoint's time
    under load.
    """
    for api in service.apis.values():
        api.output_spec.media_type = "application/json"


def document_openapi(service: Any, predict_path: str) -> None:
    """Make the OpenAPI document BentoML publishes say what the request guard enforces, once.

    BentoML rebuilds the document from the API signature whenever it is asked for and offers no
    hook: the service object is given a subclass of its own class whose ``openapi_spec`` completes
    BentoML's document with :func:`~mlops_template.serving.schema.document_predict` (required body,
    no extra top-level fields, the guard's error answers) and
    :func:`~mlops_template.serving.schema.document_readyz`.
    """
    import attrs
    from bentoml._internal.utils.cattr import bentoml_cattr

    api_name = next(name for name, api in service.apis.items() if api.route == predict_path)
    base: Any = type(service)  # BentoML's Service class, whose openapi_spec is a property

    def openapi_spec(self: Any) -> Any:
        spec = base.openapi_spec.fget(self)
        schemas = spec.components["schemas"]
        input_schema = f"{api_name}__Input"
        if input_schema in schemas:
            schemas[input_schema] = bentoml_cattr.unstructure(schemas[input_schema])
        predict = spec.paths[predict_path]
        operation = bentoml_cattr.unstructure(predict.post)
        document_predict(operation, schemas, {**ERROR_CODES, **SERVICE_ERROR_CODES}, input_schema)
        spec.paths[predict_path] = attrs.evolve(predict, post=operation)
        if READYZ_PATH in spec.paths:
            readyz = spec.paths[READYZ_PATH]
            probe = bentoml_cattr.unstructure(readyz.get)
            document_readyz(probe, schemas)
            spec.paths[READYZ_PATH] = attrs.evolve(readyz, get=probe)
        return spec

    # The same (slotted) layout as BentoML's Service, so that the object's class can be swapped.
    service.__class__ = type("DocumentedService", (base,), {"__slots__": (), "openapi_spec": property(openapi_spec)})
