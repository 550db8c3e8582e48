"""Deprecated spelling ``python -m mlops_template.golden``: use ``mlops-template golden``.

Kept for one release: prints a notice on standard error, then runs the new command line.
"""

import sys

from mlops_template.cli import run_deprecated

if __name__ == "__main__":
    sys.exit(run_deprecated("golden", ["golden", *sys.argv[1:]]))
