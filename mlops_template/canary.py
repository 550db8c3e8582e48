"""``python -m mlops_template.canary``: start, judge and settle a canary.

A thin entry point; the logic lives in :mod:`mlops_template.ops.canary`.
"""

import sys

from mlops_template.ops.canary import main

if __name__ == "__main__":
    sys.exit(main())
