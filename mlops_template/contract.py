"""Deprecated spelling ``python -m mlops_template.contract``: use ``mlops-template contract``.

Kept for one release: prints a notice on standard error, then runs the new command line.
"""

import sys

from mlops_template.cli import run_deprecated

if __name__ == "__main__":
    sys.exit(run_deprecated("contract", ["contract", *sys.argv[1:]]))
