"""deploy: package a blessed model as a BentoML bento and make it the champion; else keep the old one."""

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from mlops_template import tracking
from mlops_template.config import load_params, project_root, read_json, setup_logging, write_json

CANDIDATE = Path("models/candidate")
SERVING = Path("models/serving")
RECORD = Path("deployments/champion.json")

logger = logging.getLogger("stages.deploy")


def main() -> None:
    setup_logging()
    params = load_params()
    cfg = params["deploy"]
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
    if not gate["blessed"]:
        logger.warning("candidate v%s not blessed (%s); champion stays %s",
                       card["mlflow"]["model_version"], "; ".join(gate["reasons"]),
                       (record["champion"] or {}).get("model_version", "unset"))
        write_json(RECORD, record)
        return

    os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
    from mlops_template.packaging import package_model

    version = card["mlflow"]["model_version"]
    packaged = package_model(
        model_dir=CANDIDATE,
        contract_path=Path(params["data"]["contract"]),
        threshold=evaluation["threshold"],
        model_name=cfg["model_name"],
        service_name=cfg["service_name"],
        labels={"model_version": version, "mlflow_run_id": card["mlflow"]["run_id"]},
        export_dir=SERVING,
    )
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
    logger.info("deployed %s v%s as bento %s", cfg["model_name"], version, packaged["bento_tag"])


if __name__ == "__main__":
    main()
