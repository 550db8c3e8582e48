"""``python -m mlops_template.apikeys``: deprecated, use ``mlops-template apikeys create|list|revoke``.

Kept for one release; the command lives in :mod:`mlops_template.core.apikeys`.
"""

import sys

from mlops_template.cli import run_deprecated

if __name__ == "__main__":
    sys.exit(run_deprecated("apikeys", ["apikeys", *sys.argv[1:]]))
