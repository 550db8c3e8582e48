"""validate: check the raw CSV against the contract; valid rows on, rejected rows to quarantine."""

import logging
import shutil
import sys
from collections.abc import Mapping, Sequence

from mlops_template.core import paths
from mlops_template.core.config import setup_logging
from mlops_template.core.io import write_frame, write_json
from mlops_template.core.params import DataSection, ValidateSection
from mlops_template.pipeline.capacity import DataTooLargeError, check_single_process_fits
from mlops_template.pipeline.distributed import dask_client
from mlops_template.pipeline.distributed_validation import validate_partitioned
from mlops_template.pipeline.params_check import contract_or_exit, params_or_exit
from mlops_template.pipeline.validation import DataValidationError, describe_rejections, validate_file

logger = logging.getLogger("stages.validate")


def run(data: DataSection, cfg: ValidateSection, drop: Sequence[str], derived: Mapping[str, str],
        slices: Sequence[str], engine: str = "single", partition_mb: float = 64) -> int:
    """Validate ``data.raw`` against ``data.contract``; 1 when too many rows are rejected.

    First, as the pipeline's first stage, it checks every key that names contract columns
    (``featurize.drop``, ``featurize.derived``, ``evaluate.slices``), so a stale one stops
    ``dvc repro`` here rather than after training. On ``train.engine: single`` it then refuses
    data this machine cannot hold through training (estimated from the raw files), naming the
    Dask engine, rather than being killed halfway.
    """
    contract = contract_or_exit(data.contract, raw=data.raw, drop=drop, derived=derived, slices=slices)
    max_share = cfg.max_rejected_share
    try:
        if engine == "dask":
            with dask_client() as client:
                result = validate_partitioned(data.raw, contract, client, paths.VALIDATED,
                                              blocksize=int(partition_mb * 2**20))
        else:
            check_single_process_fits(data.raw)
            result = validate_file(data.raw, contract)
    except (DataValidationError, DataTooLargeError) as exc:
        logger.error("validation failed: %s", exc)
        return 1
    report = describe_rejections(result)
    write_frame(result.rejected, paths.QUARANTINE)
    if result.rejected_share > max_share:
        if paths.VALIDATED.is_dir():  # the Dask engine's workers wrote their valid parts as they went
            shutil.rmtree(paths.VALIDATED)
        logger.error(
            "rejected share %.2f%% exceeds validate.max_rejected_share %.2f%%; rejected rows are in %s\n%s",
            100 * result.rejected_share, 100 * max_share, paths.QUARANTINE, report,
        )
        return 1
    logger.info("%s", report)
    if engine == "single":  # the Dask engine's workers wrote their valid parts already
        write_frame(result.valid, paths.VALIDATED)
    write_json(paths.VALIDATION_METRICS, {**result.summary(), "max_rejected_share": max_share})
    return 0


def main() -> int:
    """Read params.yaml once; hand on what dvc.yaml declares for this stage (data, validate, the column
    keys, the engine)."""
    setup_logging()
    params = params_or_exit()
    return run(params.data, params.validate, params.featurize.drop, params.featurize.derived, params.evaluate.slices,
               params.train.engine, params.train.partition_mb)


if __name__ == "__main__":
    sys.exit(main())
