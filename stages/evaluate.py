"""evaluate: test-set and golden-set metrics, business value, slices, plots, importance, and the promotion gate.

Every task (binary, multiclass, regression: the contract's ``target.task``) writes the same files;
a gate naming metrics the task does not produce stops the stage with exit code 65, naming them.

The champion is read from the registry but checked against the git-tracked deployment record
(read here, through its one owner :mod:`mlops_template.ops.records`, and handed to the pipeline)
before it is loaded; a mismatch stops the stage with both digests in the message.
"""

import contextlib
import logging
import sys
from collections.abc import Iterator

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.config import project_root, setup_logging
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.io import read_json, write_json
from mlops_template.core.package_files import MODEL_CARD_FILE
from mlops_template.core.params import EvaluateSection, GateSection, MlflowSection
from mlops_template.core.tasks import task_of
from mlops_template.ops import records
from mlops_template.pipeline import golden, tracking
from mlops_template.pipeline.assessment import ChampionRefused, ChampionUnscorable, TestRows, evaluate_candidate
from mlops_template.pipeline.distributed import dask_client
from mlops_template.pipeline.distributed_evaluation import PartitionedTestSet
from mlops_template.pipeline.gate import GateConfigError
from mlops_template.pipeline.params_check import contract_or_exit, params_or_exit
from mlops_template.pipeline.scoring import ModelCardError, scoring_for

logger = logging.getLogger("stages.evaluate")
GOLDEN_REPORT = paths.METRICS / "golden.json"


def refuse(card: dict, why: str) -> int:
    """Record a refused gate in metrics/gate.json (nothing is deployed: the stage fails)."""
    write_json(paths.GATE, {"blessed": False, "reasons": [f"error: {why}"], "checks": [], "champion": None,
                            "candidate": {"model_version": card["mlflow"]["model_version"],
                                          "mlflow_run_id": card["mlflow"]["run_id"]}})
    return 1


@contextlib.contextmanager
def test_set(engine: str, kept: list[str]) -> Iterator[pd.DataFrame | TestRows]:
    """The test set in this process, or on ``train.engine: dask`` scored part by part on the cluster."""
    if engine != "dask":
        yield pd.read_parquet(paths.TEST)
        return
    with dask_client() as client:
        yield PartitionedTestSet(client, paths.TEST, kept)


def run(contract_path: str, cfg: EvaluateSection, gate_cfg: GateSection, model_name: str,
        mlflow_config: MlflowSection, inference_log_dir: str, engine: str = "single") -> int:
    """Score the candidate (and the verified champion), write metrics, plots and the gate; 1 when refused."""
    contract = contract_or_exit(contract_path, slices=cfg.slices)
    card = read_json(paths.CANDIDATE / MODEL_CARD_FILE)
    # The record lives beside the registry it vouches for (the parent repository in `dvc exp run --temp`).
    record = records.champion(project_root() / paths.CHAMPION_RECORD)
    try:
        rows = golden.load()
        if rows is None and record is not None:
            logger.warning("no golden set: the gate compares on the rolling test set only; fix one with "
                           "`python -m mlops_template golden freeze`")
        with test_set(engine, [contract.target, *cfg.slices]) as test:
            result = evaluate_candidate(cfg, gate_cfg, model_name, mlflow_config, inference_log_dir, contract,
                                        card, test, paths.CANDIDATE, champion_record=record, golden=rows)
    except GateConfigError as exc:
        logger.error("params.yaml's gate does not fit this %s task; nothing was judged:\n  - %s", contract.task,
                     str(exc).replace("; gate.", "\n  - gate."))
        refuse(card, f"gate does not fit the task: {exc}")
        return ExitCode.BAD_INPUT
    except ModelCardError as exc:
        logger.error("the candidate cannot be evaluated: %s", exc)
        return refuse(card, str(exc))
    except golden.GoldenSetError as exc:
        logger.error("golden set unusable: %s", exc)
        return refuse(card, f"golden set unusable: {exc}")
    except ChampionRefused as exc:
        logger.error("champion refused, not loaded: %s", exc)
        return refuse(card, f"champion refused: {exc}")
    except ChampionUnscorable as exc:
        logger.error("the champion model could not be scored (%s); fix the registry or remove the "
                     "'champion' alias to gate without it", exc)
        return refuse(card, f"champion unscorable: {exc}")
    write_json(paths.EVALUATION, result.metrics)
    write_json(paths.SLICES, result.slices)
    write_json(paths.GATE, result.gate)
    write_json(GOLDEN_REPORT, result.golden)
    write_json(paths.IMPORTANCE, result.importance)
    paths.PLOTS.mkdir(parents=True, exist_ok=True)
    for name, points in result.plots.items():
        write_json(paths.PLOTS / f"{name}.json", points)
    floats = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
    tracking.log_evaluation(mlflow_config, card["mlflow"]["run_id"], floats,
                            [paths.EVALUATION, paths.SLICES, paths.GATE, GOLDEN_REPORT, paths.IMPORTANCE])
    headline = scoring_for(task_of(contract), cfg, None).headline(result.metrics)
    logger.info("%s; gate: %s (%s)", headline, "BLESSED" if result.blessed else "not blessed",
                "; ".join(result.reasons))
    return 0


def main() -> int:
    """Read params.yaml once; hand on evaluate, gate, deploy.model_name, mlflow, monitoring.inference_log_dir
    and train.engine."""
    setup_logging()
    params = params_or_exit()
    return run(params.data.contract, params.evaluate, params.gate, params.deploy.model_name, params.mlflow,
               params.monitoring.inference_log_dir, params.train.engine)


if __name__ == "__main__":
    sys.exit(main())
