"""Deprecated spelling ``python -m mlops_template.retrain``: use ``mlops-template retrain``.

Kept for one release: prints a notice on standard error, then runs the new command line.
"""

import sys

from mlops_template.cli import run_deprecated

if __name__ == "__main__":
    sys.exit(run_deprecated("retrain", ["retrain", *sys.argv[1:]]))
