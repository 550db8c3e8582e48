"""``python -m mlops_template.golden freeze|show``: fix the golden evaluation set, or show it.

A thin entry point; the logic lives in :mod:`mlops_template.pipeline.golden`.
"""

import sys

from mlops_template.pipeline.golden import main

if __name__ == "__main__":
    sys.exit(main())
