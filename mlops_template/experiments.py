"""``python -m mlops_template.experiments``: a readable table of experiments; promote a blessed one.

A thin entry point; the logic lives in :mod:`mlops_template.ops.experiments`.
"""

import sys

from mlops_template.ops.experiments import main

if __name__ == "__main__":
    sys.exit(main())
