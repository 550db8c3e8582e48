"""``python -m mlops_template.contract``: draft a data contract from a CSV (infer) or check one (check).

A thin entry point; the logic lives in :mod:`mlops_template.pipeline.inference`.
"""

import sys

from mlops_template.core.config import run_command
from mlops_template.pipeline.inference import main

if __name__ == "__main__":
    sys.exit(run_command("python -m mlops_template.contract", main))
