"""deploy: package a blessed model as a BentoML bento and make it the champion; else keep the old one.

Either way the decision is appended to ``deployments/history.jsonl`` and tagged on the MLflow
version (``promote`` or ``reject``), and a promotion rewrites the serving routing file. A blessed
candidate that was rolled back earlier is not promoted again by a rerun (use the rollback command
with ``--to`` for that). ``deploy.strategy`` is ``direct`` (a blessed model takes all traffic) or
``canary``: once a champion serves, a blessed model is packaged (archive under
``models/serving/challenger/``) and becomes the routing file's challenger with
``deploy.canary_share`` of the traffic, without becoming champion; ``python -m
mlops_template.canary decide`` then promotes or rolls it back.
"""

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from mlops_template import history, routing, tracking
from mlops_template.config import load_params, project_root, read_json, setup_logging, write_json
from mlops_template.params_check import contract_or_exit

CANDIDATE = Path("models/candidate")
SERVING = Path("models/serving")
RECORD = Path("deployments/champion.json")

logger = logging.getLogger("stages.deploy")


def main() -> int:
    setup_logging()
    params = load_params()
    contract_or_exit(params)
    cfg = params["deploy"]
    strategy = cfg.get("strategy", "direct")
    if strategy not in ("direct", "canary"):
        logger.error("deploy.strategy must be 'direct' or 'canary', got %r", strategy)
        return 1
    gate = read_json("metrics/gate.json")
    evaluation = read_json("metrics/evaluation.json")
    card = read_json(CANDIDATE / "model_card.json")
    record = read_json(RECORD) if RECORD.exists() else {"champion": None}
    SERVING.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["last_decision"] = {
        "at": now,
        "candidate_version": card["mlflow"]["model_version"],
        "blessed": gate["blessed"],
        "reasons": gate["reasons"],
    }
    if os.environ.get("DVC_EXP_NAME"):
        # Experiments are for comparing; promoting from one would move the shared champion alias
        # behind the workspace's back.
        record["last_decision"]["deployed"] = False
        record["last_decision"]["reasons"] = gate["reasons"] + [
            f"experiment {os.environ['DVC_EXP_NAME']}: not deployed; to promote it run "
            f"`python -m mlops_template.experiments promote {os.environ['DVC_EXP_NAME']}`"]
        logger.info("experiment run: gate decision recorded, nothing deployed")
        write_json(RECORD, record)
        return 0
    version = card["mlflow"]["model_version"]
    current = tracking.champion_version(params["mlflow"], cfg["model_name"])
    champion = str(current.version) if current is not None else None
    reasons = gate["reasons"]
    rollback = history.rolled_back(history.read(), cfg["model_name"], version) if gate["blessed"] else None
    if rollback:
        reasons = [f"v{version} was rolled back at {rollback['at']} by {rollback['who']} "
                   f"({rollback['why']}); restore it with `python -m mlops_template.rollback --to {version}`"]
        record["last_decision"].update(blessed=False, reasons=reasons)
    if not gate["blessed"] or rollback:
        logger.warning("candidate v%s not promoted (%s); champion stays %s",
                       version, "; ".join(reasons), champion or "unset")
        history.record(history.entry("reject", cfg["model_name"], champion, version, "; ".join(reasons)),
                       params["mlflow"])
        write_json(RECORD, record)
        if champion is None:
            logger.error(nothing_deployed(cfg["model_name"], version, reasons))
            return 1
        return 0

    if strategy == "canary" and champion is not None and routing.routing_path().exists():
        return start_canary(params, card, evaluation, record, version, "; ".join(reasons))

    packaged = package(params, card, evaluation, SERVING)
    tracking.set_champion(params["mlflow"], cfg["model_name"], version,
                          {"bento_tag": packaged["bento_tag"], "promoted_at": now})
    record["champion"] = {
        "model_name": cfg["model_name"],
        "model_version": version,
        "mlflow_run_id": card["mlflow"]["run_id"],
        "bento_tag": packaged["bento_tag"],
        "model_tag": packaged["model_tag"],
        "archive": str(SERVING / Path(packaged["archive"]).name),
        "archive_sha256": packaged["sha256"],
        "sha256": card["sha256"],
        "threshold": evaluation["threshold"],
        "test_roc_auc": evaluation["roc_auc"],
        "git_revision": card["git_revision"],
        "deployed_at": now,
    }
    write_json(RECORD, record)
    history.record(
        history.entry("promote", cfg["model_name"], champion, version, "; ".join(reasons),
                      model_tag=packaged["model_tag"], bento_tag=packaged["bento_tag"],
                      champion=record["champion"]),
        params["mlflow"],
    )
    routing.write_routing(None, routing.champion_only(cfg["model_name"], packaged["model_tag"], version,
                                                      cfg.get("canary_share", 0.0)))
    logger.info("deployed %s v%s as bento %s", cfg["model_name"], version, packaged["bento_tag"])
    return 0


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


def package(params: dict, card: dict, evaluation: dict, export_dir: Path) -> dict:
    """Save the candidate as a BentoML model, build its bento and export the archive."""
    os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
    from mlops_template.packaging import package_model

    return package_model(
        model_dir=CANDIDATE,
        contract_path=Path(params["data"]["contract"]),
        threshold=evaluation["threshold"],
        model_name=params["deploy"]["model_name"],
        service_name=params["deploy"]["service_name"],
        labels={"model_version": card["mlflow"]["model_version"], "mlflow_run_id": card["mlflow"]["run_id"]},
        export_dir=export_dir,
    )


def start_canary(params: dict, card: dict, evaluation: dict, record: dict, version: str,
                 why: str) -> int:
    """Package the blessed candidate and make it the challenger; the champion keeps serving."""
    from mlops_template import canary

    cfg = params["deploy"]
    packaged = package(params, card, evaluation, SERVING / "challenger")
    canary.start(params, version, cfg.get("canary_share", canary.DEFAULTS["canary_share"]), why,
                 model_tag=packaged["model_tag"])
    record["last_decision"]["action"] = "canary_start"
    write_json(RECORD, record)
    logger.info("v%s packaged as %s and serving as challenger", version, packaged["model_tag"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
