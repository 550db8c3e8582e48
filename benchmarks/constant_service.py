"""The serving setup of mlops_template.serving.service answering a constant: the framework's ceiling.

Same request model (validated from the contract), same request guard and metrics middleware,
same traffic settings, workers (``WORKERS``) and garbage-collector setting, and the same JSON
response path; only the model call is gone. benchmarks/serving.py serves
it beside the real service to measure how close the model gets to what BentoML itself can do.
"""

import bentoml

from mlops_template.serving import service as real
from mlops_template.serving.guard import RequestGuard
from mlops_template.serving.metrics import service_metrics

CONSTANT = real.Prediction(probability=0.5, label="constant", model_version="constant")


@bentoml.service(traffic={"timeout": real.SETTINGS.request_timeout}, workers=real.SETTINGS.workers)
class ConstantService:
    """Validates records like the real service, then answers without scoring them."""

    def __init__(self) -> None:
        """Hand the guard its metrics and a readiness check, as the real service does."""
        real.GUARD_RUNTIME.metrics = service_metrics(real.CONTRACT.name)
        real.GUARD_RUNTIME.is_ready = lambda: True

    @bentoml.on_startup
    async def settle(self) -> None:
        """The same garbage-collector setting as the real service."""
        real.freeze_startup_objects()

    @bentoml.api
    async def predict(self, records: real.RecordList, ctx: bentoml.Context) -> list[real.Prediction]:
        """One constant prediction per record."""
        return [CONSTANT] * len(records)


real.declare_json_responses(ConstantService)
ConstantService.add_asgi_middleware(RequestGuard, settings=real.guard_settings(),
                                    runtime=real.GUARD_RUNTIME)
