"""validate: check the raw CSV against the contract; valid rows on, rejected rows to quarantine."""

import logging
import sys

from mlops_template.core import paths
from mlops_template.core.config import load_params, setup_logging
from mlops_template.core.io import write_frame, write_json
from mlops_template.pipeline.params_check import contract_or_exit
from mlops_template.pipeline.validation import DataValidationError, describe_rejections, validate_file

logger = logging.getLogger("stages.validate")


def main() -> int:
    setup_logging()
    params = load_params()
    contract = contract_or_exit(params)
    max_share = params["validate"]["max_rejected_share"]
    try:
        result = validate_file(params["data"]["raw"], contract)
    except DataValidationError as exc:
        logger.error("validation failed: %s", exc)
        return 1
    report = describe_rejections(result)
    write_frame(result.rejected, paths.QUARANTINE)
    if result.rejected_share > max_share:
        logger.error(
            "rejected share %.2f%% exceeds validate.max_rejected_share %.2f%%; rejected rows are in %s\n%s",
            100 * result.rejected_share, 100 * max_share, paths.QUARANTINE, report,
        )
        return 1
    logger.info("%s", report)
    write_frame(result.valid, paths.VALIDATED)
    write_json(paths.VALIDATION_METRICS, {**result.summary(), "max_rejected_share": max_share})
    return 0


if __name__ == "__main__":
    sys.exit(main())
