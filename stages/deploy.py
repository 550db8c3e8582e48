"""deploy: package a blessed model as a BentoML bento and make it serve; else keep the champion.

The policy (experiments, rejections, rolled-back versions, direct or canary) is
:mod:`mlops_template.ops.promotion`; this script reads the inputs and hands them over.
"""

import sys

from mlops_template.core import paths
from mlops_template.core.config import setup_logging
from mlops_template.core.io import read_json
from mlops_template.core.package_files import MODEL_CARD_FILE
from mlops_template.core.params import DeploySection, MlflowSection
from mlops_template.ops.promotion import carry_out
from mlops_template.pipeline.params_check import contract_or_exit, params_or_exit


def run(contract_path: str, deploy: DeploySection, mlflow_config: MlflowSection) -> int:
    """Hand the gate's decision, the evaluation and the candidate's card to the deployment policy."""
    contract_or_exit(contract_path)
    paths.SERVING.mkdir(parents=True, exist_ok=True)
    return carry_out(deploy, mlflow_config, contract_path, gate=read_json(paths.GATE),
                     evaluation=read_json(paths.EVALUATION), card=read_json(paths.CANDIDATE / MODEL_CARD_FILE))


def main() -> int:
    """Read params.yaml once; hand on deploy and mlflow (the contract is a ``${data.contract}`` dep)."""
    setup_logging()
    params = params_or_exit()
    return run(params.data.contract, params.deploy, params.mlflow)


if __name__ == "__main__":
    sys.exit(main())
