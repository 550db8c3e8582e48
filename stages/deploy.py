"""deploy: package a blessed model as a BentoML bento and make it serve; else keep the champion.

The policy (experiments, rejections, rolled-back versions, direct or canary) is
:mod:`mlops_template.ops.promotion`; this script reads the inputs and hands them over.
"""

import sys

from mlops_template.core import paths
from mlops_template.core.config import load_params, setup_logging
from mlops_template.core.io import read_json
from mlops_template.ops.promotion import carry_out
from mlops_template.pipeline.params_check import contract_or_exit


def main() -> int:
    setup_logging()
    params = load_params()
    contract_or_exit(params)
    paths.SERVING.mkdir(parents=True, exist_ok=True)
    return carry_out(params, gate=read_json(paths.GATE), evaluation=read_json(paths.EVALUATION),
                     card=read_json(paths.CANDIDATE / "model_card.json"))


if __name__ == "__main__":
    sys.exit(main())
