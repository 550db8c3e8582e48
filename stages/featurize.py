"""featurize: row-wise features, a keyed train/test split and a drift reference."""

import logging

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.config import setup_logging
from mlops_template.core.features import build_features, feature_spec_from
from mlops_template.core.io import write_frame
from mlops_template.core.params import FeaturizeSection
from mlops_template.pipeline.distributed import dask_client
from mlops_template.pipeline.distributed_features import SplitPlan, featurize_partitioned
from mlops_template.pipeline.params_check import contract_or_exit, params_or_exit
from mlops_template.pipeline.splits import split_salt, split_train_test

logger = logging.getLogger("stages.featurize")


def run(contract_path: str, cfg: FeaturizeSection, engine: str = "single") -> None:
    """Features of the validated rows, split into train and test, and the drift reference sample.

    On ``train.engine: dask`` each partition is featurized and split where it lies, into
    partitioned train and test sets at the same paths.
    """
    contract = contract_or_exit(contract_path, drop=cfg.drop, derived=cfg.derived)
    spec = feature_spec_from(contract, list(cfg.drop), cfg.derived)
    # The split hashes the contract's input columns with a secret salt (SPLIT_SALT or its file).
    inputs = [c for c in contract.column_names if c != contract.target]
    if engine == "dask":
        plan = SplitPlan(spec, tuple(inputs), cfg.test_size, cfg.seed, split_salt(), cfg.reference_rows)
        with dask_client() as client:
            featurize_partitioned(paths.VALIDATED, plan, client, paths.TRAIN, paths.TEST, paths.REFERENCE)
        spec.to_json(paths.FEATURE_SPEC)
        return
    data = pd.read_parquet(paths.VALIDATED)
    features = build_features(data, spec)
    # Keep the contract columns too: scoring an older champion re-derives its own features.
    data = data.join(features[list(spec.derived)])
    train, test, reference = split_train_test(
        data, contract.target, cfg.test_size, cfg.seed, cfg.reference_rows, columns=inputs
    )
    for path, frame in ((paths.TRAIN, train), (paths.TEST, test), (paths.REFERENCE, reference)):
        write_frame(frame, path)
    spec.to_json(paths.FEATURE_SPEC)
    logger.info("train %d rows, test %d rows, reference %d rows, %d features",
                len(train), len(test), len(reference), len(spec.columns))


def main() -> None:
    """Read params.yaml once; hand on the featurize section and the engine (the contract is a
    ``${data.contract}`` dep)."""
    setup_logging()
    params = params_or_exit()
    run(params.data.contract, params.featurize, params.train.engine)


if __name__ == "__main__":
    main()
