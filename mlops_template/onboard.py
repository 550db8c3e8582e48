"""``python -m mlops_template.onboard``: adopt a CSV: draft its contract, point params.yaml at it.

A thin entry point; the logic lives in :mod:`mlops_template.pipeline.onboarding`.
"""

import sys

from mlops_template.core.config import run_command
from mlops_template.pipeline.onboarding import main

if __name__ == "__main__":
    sys.exit(run_command("python -m mlops_template.onboard", main))
