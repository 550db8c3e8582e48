"""``python -m mlops_template <command>``: the same command line as the ``mlops-template`` script."""

import sys

from mlops_template.cli import main

if __name__ == "__main__":
    sys.exit(main())
