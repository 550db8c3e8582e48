"""``params.yaml`` read once into typed, frozen sections, each checked for shape when it is read.

One model per section (``data``, ``validate``, ``featurize``, ``train``, ``evaluate``, ``gate``,
``deploy``, ``mlflow``, ``monitoring``, ``ingest``). Each refuses a key it does not know (a
typo'd key is named, with the known ones), and each default lives here and nowhere else. What
can be checked without the data contract is checked here (numbers, names, the gate's
thresholds); what needs the contract (do the named columns exist?) is checked by
:mod:`mlops_template.pipeline.params_check`, on these same models.

A stage loads the file once with :func:`load` and hands on only the sections it declares in
``dvc.yaml`` (``tests/unit/test_stage_params.py`` holds it to that). ``dvc exp run -S key=value``
rewrites the file with YAML of its own (block lists, quoted numbers): pydantic's lax mode takes it.
"""


from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_template.core import paths
from mlops_template.core.gate_params import (
    DIRECTIONS,
    AnswerChangeGate,
    ChangeLimit,
    GateSection,
    SliceGate,
    ValueBound,
)
from mlops_template.core.params_base import ParamsError, Section, finite_number, share

__all__ = [
    "DIRECTIONS", "SECTIONS", "AnswerChangeGate", "ChangeLimit", "DataSection", "DeploySection", "EvaluateSection",
    "FeaturizeSection", "GateSection", "IngestSection", "MlflowSection", "MonitoringSection", "Params", "ParamsError",
    "RegressionCosts", "Section", "SliceGate", "TrainSection", "ValidateSection", "ValueBound", "check_strategy",
    "load", "parse_sections", "read_mapping",
]

MODEL_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
VALUE_KEYS = ("tp", "fp", "tn", "fn")
# train.estimator names; every task in mlops_template/core/tasks maps each (tests/unit/pipeline/test_training_tasks.py)
ESTIMATOR_NAMES = ("linear", "logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm")
ENGINES = ("single", "dask")
ESTIMATOR_ALIASES = {"linear": "logistic_regression", "logistic_regression": "linear"}
STRATEGIES = ("direct", "canary")


def check_strategy(value: str) -> str:
    """``deploy.strategy`` is one of :data:`STRATEGIES` (also checked by the promotion plan)."""
    if value not in STRATEGIES:
        raise ValueError(f"deploy.strategy must be one of {STRATEGIES}, got {value!r}")
    return value


class DataSection(Section):
    """Where the raw batches and the data contract are (repository-relative)."""

    KEY: ClassVar[str] = "data"
    raw: str
    contract: str


class ValidateSection(Section):
    """The validate stage: how many rejected rows stop the pipeline."""

    KEY: ClassVar[str] = "validate"
    max_rejected_share: float

    @field_validator("max_rejected_share")
    @classmethod
    def _a_share(cls, value: float) -> float:
        return share(value, "validate.max_rejected_share")


class FeaturizeSection(Section):
    """The featurize stage: split, drift reference, derived and dropped columns."""

    KEY: ClassVar[str] = "featurize"
    test_size: float = Field(gt=0, lt=1)
    seed: int
    reference_rows: int = Field(ge=0)
    derived: dict[str, str] = {}
    drop: tuple[str, ...] = ()

    @field_validator("drop", mode="before")
    @classmethod
    def _drop_is_a_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"featurize.drop must be a list of column names, got {value!r}")
        return value

    @field_validator("derived", mode="before")
    @classmethod
    def _derived_are_expressions(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"featurize.derived must map new column names to expressions, got {value!r}")
        for name, expression in value.items():
            key = f"featurize.derived.{name}"
            if not isinstance(name, str) or name.startswith("_"):
                raise ValueError(f"{key}: a derived column name must be text not starting with '_'")
            if not isinstance(expression, str):
                raise ValueError(f"{key} must be an expression (a string), got {expression!r}")
        return value


class TrainSection(Section):
    """The train stage: which estimator, its seed, and hyperparameters per estimator.

    ``estimator`` names a kind of model every task offers (:data:`ESTIMATOR_NAMES`; the task maps
    it to its sklearn class, e.g. ``linear`` is a logistic regression for a classifier and a ridge
    regression for a regression). ``logistic_regression`` is ``linear``'s older name; each reads
    the other's hyperparameters when it has none of its own.
    """

    KEY: ClassVar[str] = "train"
    estimator: str
    seed: int
    hyperparameters: dict[str, dict[str, Any]] = {}
    #: ``single``: one process. ``dask``: validate, featurize and train on partitions over a dask.distributed
    #: cluster, training LightGBM across the workers (:mod:`mlops_template.pipeline.distributed`).
    engine: str = "single"
    partition_mb: float = Field(default=64, gt=0)   # raw CSV megabytes per partition on the dask engine

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"train.engine must be one of {list(ENGINES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _engine_trains_its_estimator(self) -> TrainSection:
        if self.engine == "dask" and self.estimator != "lightgbm":
            raise ValueError(f"train.engine: dask trains LightGBM across the workers: set train.estimator: "
                             f"lightgbm (got {self.estimator!r})")
        return self

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        if value not in ESTIMATOR_NAMES:
            raise ValueError(f"train.estimator must be one of {list(ESTIMATOR_NAMES)}, got {value!r}")
        return value

    @property
    def chosen_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters of the chosen estimator, else of its alias (none set: its own defaults)."""
        own = self.hyperparameters.get(self.estimator)
        if own is None and self.estimator in ESTIMATOR_ALIASES:
            own = self.hyperparameters.get(ESTIMATOR_ALIASES[self.estimator])
        return dict(own or {})


class RegressionCosts(BaseModel):
    """``evaluate.costs``: the cost of one unit of over- and of under-prediction (regression's business value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    over: float = 1.0
    under: float = 1.0

    @field_validator("over", "under", mode="before")
    @classmethod
    def _a_cost(cls, value: Any, info: Any) -> Any:
        if finite_number(value, f"evaluate.costs.{info.field_name}") < 0:
            raise ValueError(f"evaluate.costs.{info.field_name} is a cost per unit, so not negative, got {value!r}")
        return value


class EvaluateSection(Section):
    """The evaluate stage: the value of each decision (per task), slices, the golden set's size.

    ``value_matrix`` is binary's (tp, fp, tn, fn); ``costs`` regression's (per unit over/under);
    ``class_values`` multiclass's (actual class -> predicted class -> value; none: 1 per right answer).
    Each task reads only its own (:mod:`mlops_template.pipeline.scoring`).
    """

    KEY: ClassVar[str] = "evaluate"
    value_matrix: dict[str, float] = {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0}
    costs: RegressionCosts = RegressionCosts()
    class_values: dict[str, dict[str, float]] | None = None
    slices: tuple[str, ...] = ()
    min_slice_rows: int = Field(default=30, ge=0)
    golden_max_rows: int = Field(default=20000, gt=0)

    @field_validator("class_values", mode="before")
    @classmethod
    def _a_value_table(cls, table: Any) -> Any:
        if table is None:
            return None
        if not isinstance(table, Mapping) or not table:
            raise ValueError("evaluate.class_values must map each actual class to {predicted class: value}, "
                             f"got {table!r}")
        for actual, row in table.items():
            if not isinstance(row, Mapping) or not row:
                raise ValueError(f"evaluate.class_values.{actual} must map predicted classes to values, got {row!r}")
            for predicted, value in row.items():
                finite_number(value, f"evaluate.class_values.{actual}.{predicted}")
        return {str(a): {str(p): v for p, v in row.items()} for a, row in table.items()}

    @field_validator("value_matrix", mode="before")
    @classmethod
    def _four_numbers(cls, matrix: Any) -> Any:
        if not isinstance(matrix, Mapping) or any(
                not isinstance(matrix.get(k), (int, float)) or isinstance(matrix.get(k), bool) for k in VALUE_KEYS):
            raise ValueError(f"evaluate.value_matrix must give a number for each of {list(VALUE_KEYS)} "
                             f"(the value of a true/false positive/negative), got {matrix!r}")
        return matrix

    @field_validator("slices", mode="before")
    @classmethod
    def _slices_are_a_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"evaluate.slices must be a list of column names, got {value!r}")
        return value


# --- deploy, mlflow, monitoring, ingest ---------------------------------------------------------

class DeploySection(Section):
    """Model and service names, the release strategy and the canary's limits."""

    KEY: ClassVar[str] = "deploy"
    model_name: str
    service_name: str
    strategy: str = "direct"
    canary_share: float = 0.1  # the challenger's share of requests (hash of X-Routing-Key / request id)
    canary_min_requests: int = Field(default=100, ge=0)
    canary_max_error_rate: float = Field(default=0.01, ge=0)
    canary_max_latency_ratio: float = Field(default=1.5, gt=0)

    @field_validator("model_name", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        if not MODEL_NAME.match(str(value)):
            raise ValueError(f"deploy.model_name {value!r} must be lowercase letters, digits, "
                             "'-', '_' or '.' (MLflow and BentoML name the model after it)")
        return value

    @field_validator("service_name", mode="before")
    @classmethod
    def _service_name(cls, value: Any) -> Any:
        if not SERVICE_NAME.match(str(value)):
            raise ValueError(f"deploy.service_name {value!r} must be lowercase letters, "
                             "digits and '_', starting with a letter (the bento is named after it)")
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        return check_strategy(value)

    @field_validator("canary_share")
    @classmethod
    def _a_share(cls, value: float) -> float:
        return share(value, "deploy.canary_share")


class MlflowSection(Section):
    """The tracking store (a relative ``sqlite:///`` path resolves against the repository root)."""

    KEY: ClassVar[str] = "mlflow"
    tracking_uri: str
    experiment: str


class MonitoringSection(Section):
    """The drift and quality jobs; environment overrides apply in :class:`mlops_template.monitoring.Settings`."""

    KEY: ClassVar[str] = "monitoring"
    inference_log_dir: str = "monitoring/inference-log"  # or the team's s3:// prefix
    window_records: int = Field(default=5000, gt=0)
    min_window_records: int = Field(default=500, ge=0)
    drift_share_threshold: float = 0.2
    prediction_psi_threshold: float = Field(default=0.2, gt=0)
    model_package: str = "champion"  # the served model's package: champion (its record), a folder, or "" for none
    importance: str = "metrics/importance.json"  # used when the package has no importance.json; "" for none
    quality_drop_fraction: float = 0.2
    quality_min_labelled: int = Field(default=100, ge=0)
    report_dir: str = "monitoring/reports"
    alert_dedup_hours: float = Field(default=6.0, ge=0)
    pushgateway_url: str | None = None
    webhook_url: str | None = None
    alertmanager_url: str | None = None


class IngestSection(Section):
    """The retrain command's bad-batch guard (:mod:`mlops_template.ops.guard`).

    Joint checks' keys are optional: unset, the defaults of ``ops.guard.joint.JointSettings`` apply.
    """

    KEY: ClassVar[str] = "ingest"
    incoming: str
    quarantine: str
    reports: str = str(paths.INGEST_REPORTS)
    max_batch_bytes: int = Field(default=256 * 1024 * 1024, gt=0)  # larger INCOMING_URL objects stay there
    min_rows: int = Field(ge=0)
    max_invalid_share: float
    max_duplicate_share: float
    max_label_shift: float
    max_psi: float
    max_tvd: float
    max_drifted_columns: int = Field(ge=0)
    alpha: float | None = None
    min_group_rows: int | None = None
    min_group_label_shift: float | None = None
    numeric_group_bins: int | None = None
    trigger_rare_share: float | None = None
    min_trigger_rows: int | None = None
    trigger_label_purity: float | None = None
    max_label_flip_excess: float | None = None
    max_near_duplicate_excess: float | None = None

    def thresholds(self) -> dict[str, Any]:
        """The guard's thresholds mapping (what :func:`mlops_template.ops.ingest.ingest` takes)."""
        return self.model_dump(exclude_none=True)


SECTIONS: dict[str, type[Section]] = {
    "data": DataSection, "validate": ValidateSection, "featurize": FeaturizeSection, "train": TrainSection,
    "evaluate": EvaluateSection, "gate": GateSection, "deploy": DeploySection, "mlflow": MlflowSection,
    "monitoring": MonitoringSection, "ingest": IngestSection,
}
OPTIONAL_SECTIONS = ("gate", "monitoring")  # every key has a default


with warnings.catch_warnings():  # ``validate`` shadows pydantic's deprecated classmethod, on purpose
    warnings.filterwarnings("ignore", message='Field name "validate"')

    class Params(BaseModel):
        """The whole params.yaml, one typed, frozen section per stage or command."""

        model_config = ConfigDict(frozen=True, extra="forbid")
        data: DataSection
        validate: ValidateSection  # type: ignore[assignment]
        featurize: FeaturizeSection
        train: TrainSection
        evaluate: EvaluateSection
        gate: GateSection = GateSection()
        deploy: DeploySection
        mlflow: MlflowSection
        monitoring: MonitoringSection = MonitoringSection()
        ingest: IngestSection

        def section(self, name: str) -> Section:
            """A section by its params.yaml name (``validate`` included)."""
            if name not in SECTIONS:
                raise KeyError(f"params.yaml has no section {name!r}; known: {list(SECTIONS)}")
            return getattr(self, name)

        @classmethod
        def from_mapping(cls, raw: Any) -> Params:
            """Every section checked; ParamsError lists every wrong or missing key at once."""
            if not isinstance(raw, Mapping):
                raise ParamsError([f"params.yaml must be a mapping of sections, got {type(raw).__name__}"])
            sections, problems = parse_sections(raw)
            if problems:
                raise ParamsError(problems)
            return cls.model_validate(sections)


def parse_sections(raw: Mapping[str, Any]) -> tuple[dict[str, Section], list[str]]:
    """Each known section of ``raw`` parsed on its own: the good ones, and one line per problem."""
    sections: dict[str, Section] = {}
    problems = [f"unknown params.yaml section {name!r}; known: {list(SECTIONS)}" for name in raw
                if name not in SECTIONS]
    for name, model in SECTIONS.items():
        if raw.get(name) is None and name not in OPTIONAL_SECTIONS:
            problems.append(f"params.yaml has no {name} section")
            continue
        try:
            sections[name] = model.parse(raw.get(name))
        except ParamsError as exc:
            prefix = "gate: " if name == "gate" else ""
            problems += [prefix + p for p in exc.problems]
    return sections, problems


def read_mapping(path: str | Path = paths.PARAMS) -> Any:
    """params.yaml as plain YAML, unchecked: for tools that rewrite or compare it, and tests that vary it."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load(path: str | Path = paths.PARAMS) -> Params:
    """params.yaml, read and checked once; ParamsError names every wrong key."""
    return Params.from_mapping(read_mapping(path))
