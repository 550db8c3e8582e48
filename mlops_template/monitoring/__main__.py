"""``python -m mlops_template.monitoring drift|quality``: deprecated, use ``mlops-template drift|quality``.

Kept for one release; the jobs' command lines live in :mod:`mlops_template.monitoring.commands`.
"""

import sys

from mlops_template.cli import run_deprecated

if __name__ == "__main__":
    sys.exit(run_deprecated("monitoring", sys.argv[1:]))
