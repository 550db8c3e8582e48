"""The deployment policy: what a gate decision does to what serves.

:func:`plan` is the policy as a pure function of the gate decision and the deployment state:

- an experiment run (``dvc exp run``) never deploys: experiments are for comparing, and
  promoting from one would move the shared champion behind the workspace's back;
- a candidate the gate did not bless is rejected, and so is a blessed one that was rolled back
  earlier (restore it with the rollback command instead);
- with ``deploy.strategy: canary`` and a champion serving through the routing file, a blessed
  candidate becomes the challenger; otherwise (``direct``, or the first model) it becomes the
  champion at once.

A rejection when no champion exists yet is the repository's first model failing the gate:
:func:`carry_out` then prints a ``NOTHING DEPLOYED`` block and returns 1, so ``dvc repro`` fails
instead of exiting 0 with nothing served. :func:`carry_out` does what the plan says under the
transition lease (:mod:`mlops_template.ops.lease`; a deploy run by ``retrain`` or ``experiments
promote`` works under theirs): it packages the bento and has :mod:`mlops_template.ops.transitions`
move the MLflow aliases and write the records, the history and, last, the routing file (with the
model's sha256 from the deployment record, signed when ``ROUTING_SIGNING_KEY_FILE`` is set; team
mode requires it). Another operator holding the lease, or a routing document changed since it
was read, stops the stage with exit 75 (try again).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.config import project_root
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.io import utc_now
from mlops_template.core.params import DeploySection, MlflowSection, check_strategy
from mlops_template.ops import lease, records, transitions
from mlops_template.serving import routing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What to do with a candidate: ``promote``, ``canary``, ``reject`` or ``record`` (experiment)."""

    action: str
    reasons: list[str]
    first_model: bool  # no champion exists yet


def plan(gate: dict[str, Any], candidate: str, champion: str | None, history: list[dict[str, Any]],
         model_name: str, strategy: str, experiment: str | None, canary_possible: bool) -> Plan:
    """The policy above; ``canary_possible`` is true when a routing file names a champion."""
    check_strategy(strategy)
    reasons, first = list(gate["reasons"]), champion is None
    if experiment and not gate["blessed"]:
        return Plan("record", [*reasons, f"experiment {experiment}: not blessed, not deployed"], first)
    if experiment:
        return Plan("record", [*reasons, f"experiment {experiment}: not deployed; to promote it run "
                               f"`python -m mlops_template experiments promote {experiment}`"], first)
    if not gate["blessed"]:
        return Plan("reject", reasons, first)
    rollback = records.rolled_back(history, model_name, candidate)
    if rollback:
        return Plan("reject", [f"v{candidate} was rolled back at {rollback['at']} by {rollback['who']} "
                               f"({rollback['why']}); restore it with "
                               f"`python -m mlops_template rollback --to {candidate}`"], first)
    if strategy == "canary" and not first and canary_possible:
        return Plan("canary", reasons, first)
    return Plan("promote", reasons, first)


def nothing_deployed(model_name: str, version: str, reasons: list[str]) -> str:
    """The message that stops ``dvc repro`` when the first model of a repository is not blessed."""
    rule = "=" * 78
    lines = [rule, f"NOTHING DEPLOYED: {model_name} v{version} is the first model and the gate did not "
             "bless it,", "so no champion exists and models/serving/ is empty. Reasons:"]
    lines += [f"  - {r}" for r in reasons]
    lines += ["What to change: improve the model (featurize.*, train.* in params.yaml, or the data), or",
              "relax the gate key named in brackets above (gate.* in params.yaml), then run `dvc repro`.",
              "metrics/gate.json holds every check; metrics/evaluation.json the candidate's figures.", rule]
    return "\n".join(lines)


def package(cfg: DeploySection, contract_path: str, card: dict[str, Any], evaluation: dict[str, Any],
            archive: Path) -> dict[str, Any]:
    """Package the candidate as a BentoML model and bento, exported to ``archive``; its record."""
    os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
    from mlops_template.pipeline.packaging import package_model

    packaged = package_model(
        model_dir=paths.CANDIDATE, contract_path=Path(contract_path),
        threshold=evaluation.get("threshold"), decision_values=evaluation.get("decision_values"),
        model_name=cfg.model_name, service_name=cfg.service_name,
        labels={"model_version": card["mlflow"]["model_version"], "mlflow_run_id": card["mlflow"]["run_id"]},
        archive=archive,
    )
    return records.deployment(
        model_name=cfg.model_name, model_version=card["mlflow"]["model_version"],
        mlflow_run_id=card["mlflow"]["run_id"], bento_tag=packaged["bento_tag"],
        model_tag=packaged["model_tag"], archive=str(archive), archive_sha256=packaged["sha256"],
        sha256=card["sha256"], threshold=evaluation.get("threshold"), test_roc_auc=evaluation.get("roc_auc"),
        git_revision=card["git_revision"], deployed_at=utc_now(), **primary_metric_field(contract_path, evaluation),
    )


def primary_metric_field(contract_path: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """``test_metric`` for the deployment record of a model whose task's primary metric is not ROC AUC.

    Binary records keep the shape they always had (``test_roc_auc``), so this is empty for them.
    """
    from mlops_template.core.contract import load_contract
    from mlops_template.core.tasks import task_of

    metric = task_of(load_contract(contract_path)).primary_metric
    if metric == "roc_auc":
        return {}
    return {"test_metric": {"name": metric, "value": evaluation.get(metric)}}


def carry_out(deploy: DeploySection, mlflow_config: MlflowSection, contract_path: str, gate: dict[str, Any],
              evaluation: dict[str, Any], card: dict[str, Any]) -> int:
    """Plan the deployment of the candidate and do it under the transition lease; the stage's exit code.

    An experiment run (``DVC_EXP_NAME``) only records, so it takes no lease: queued experiments
    run side by side without blocking each other or a deploy.
    """
    if os.environ.get("DVC_EXP_NAME"):
        return _carry_out(deploy, mlflow_config, contract_path, gate, evaluation, card)
    try:
        with lease.held("deploy"):
            return _carry_out(deploy, mlflow_config, contract_path, gate, evaluation, card)
    except (lease.Locked, lease.LeaseLost, routing.RoutingConflict) as exc:
        logger.error("deploy stopped, try again: %s", exc)
        return int(ExitCode.LOCKED)


def _carry_out(cfg: DeploySection, mlflow_config: MlflowSection, contract_path: str, gate: dict[str, Any],
               evaluation: dict[str, Any], card: dict[str, Any]) -> int:
    from mlops_template.pipeline import tracking

    name, version = cfg.model_name, str(card["mlflow"]["model_version"])
    current = tracking.champion_version(mlflow_config, name)
    champion = str(current.version) if current is not None else None
    serving = transitions.read_serving(verify=False)
    chosen = plan(gate, version, champion, records.read(), name, cfg.strategy,
                  os.environ.get("DVC_EXP_NAME"), serving.document is not None)
    why = "; ".join(chosen.reasons)
    gate_fields = {"candidate_version": version, "blessed": gate["blessed"] and chosen.action != "reject"}
    if chosen.action == "record":
        records.write_record(records.decision("experiment", champion, version, chosen.reasons,
                                              **gate_fields, deployed=False))
        logger.info("experiment run: gate decision recorded, nothing deployed")
        return 0
    if chosen.action == "reject":
        records.record(records.entry("reject", name, champion, version, why), mlflow_config)
        records.write_record(records.decision("reject", champion, version, chosen.reasons,
                                              **gate_fields, deployed=False))
        if chosen.first_model:
            logger.error(nothing_deployed(name, version, chosen.reasons))
            return 1
        logger.warning("candidate v%s not promoted (%s); champion stays v%s", version, why, champion)
        return 0
    if chosen.action == "canary":
        challenger = package(cfg, contract_path, card, evaluation, paths.CHALLENGER_ARCHIVE)
        transitions.start_challenger(
            transitions.read_serving(), name, version, challenger["model_tag"], challenger["sha256"],
            cfg.canary_share, why, mlflow_config, challenger=challenger,
            decision=records.decision("canary_start", champion, version, chosen.reasons, **gate_fields,
                                      deployed=True))
        logger.info("v%s packaged as %s and serving as challenger", version, challenger["model_tag"])
        return 0
    deployed = package(cfg, contract_path, card, evaluation, paths.CHAMPION_ARCHIVE)
    transitions.make_champion(serving, deployed, champion, mlflow_config, chosen.reasons,
                              cfg.canary_share, {**gate_fields, "deployed": True})
    logger.info("deployed %s v%s as bento %s", name, version, deployed["bento_tag"])
    return 0
