"""``python -m mlops_template.retrain``: guard incoming batches, reproduce the pipeline, promote or keep, commit.

A thin entry point; the logic lives in :mod:`mlops_template.ops.retrain`.
"""

import sys

from mlops_template.ops.retrain import main

if __name__ == "__main__":
    sys.exit(main())
