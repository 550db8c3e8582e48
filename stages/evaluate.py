"""evaluate: test-set metrics, business value, slices, plots, and the promotion gate."""

import logging
import sys

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.config import load_params, setup_logging
from mlops_template.core.io import read_json, write_json
from mlops_template.pipeline import tracking
from mlops_template.pipeline.evaluation import ChampionUnscorable, evaluate_candidate
from mlops_template.pipeline.params_check import contract_or_exit

logger = logging.getLogger("stages.evaluate")


def main() -> int:
    setup_logging()
    params = load_params()
    contract = contract_or_exit(params)
    card = read_json(paths.CANDIDATE / "model_card.json")
    try:
        result = evaluate_candidate(params, contract, card, pd.read_parquet(paths.TEST), paths.CANDIDATE)
    except ChampionUnscorable as exc:
        logger.error("the champion model could not be scored (%s); fix the registry or remove the "
                     "'champion' alias to gate without it", exc)
        return 1
    write_json(paths.EVALUATION, result.metrics)
    write_json(paths.SLICES, result.slices)
    write_json(paths.GATE, result.gate)
    for name, points in result.plots.items():
        write_json(paths.PLOTS / f"{name}.json", points)
    floats = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
    tracking.log_evaluation(params["mlflow"], card["mlflow"]["run_id"], floats,
                            [paths.EVALUATION, paths.SLICES, paths.GATE])
    logger.info("ROC AUC %.4f, value/row %.2f at threshold %.3f; gate: %s (%s)",
                result.metrics["roc_auc"], result.metrics["value_per_row"], result.metrics["threshold"],
                "BLESSED" if result.blessed else "not blessed", "; ".join(result.reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
