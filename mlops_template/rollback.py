"""``python -m mlops_template.rollback``: put the previous champion back.

A thin entry point; the logic lives in :mod:`mlops_template.ops.rollback`.
"""

import sys

from mlops_template.ops.rollback import main

if __name__ == "__main__":
    sys.exit(main())
