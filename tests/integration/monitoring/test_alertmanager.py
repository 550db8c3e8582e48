"""One notification per incident: drift job -> Pushgateway -> Prometheus -> Alertmanager -> Slack.

Real Debian binaries (``prometheus-pushgateway``, ``prometheus``, ``prometheus-alertmanager``)
run the repository's own ``alerts.yml`` and ``alertmanager.yml``, with intervals shortened and
the Slack URL pointing at a local Slack-format receiver. The drift job runs as cron would, with
``ALERTMANAGER_URL`` set and its own webhook configured too: Alertmanager must send exactly one
FIRING message for the incident (none for the job's second, still drifting, run) and one
RESOLVED message after a clean run, and the job itself must send nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from mlops_template.core.contract import load_contract
from mlops_template.core.exitcodes import ExitCode
from mlops_template.pipeline.validation import validate_file
from mlops_template.serving.inference_log import InferenceLog
from tests.support.servers import free_port, start_process, stop_server, wait_for
from tests.support.waiting import wait_until
from tests.support.webhook import receiving

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "monitoring"
TIMEOUT = 90.0
ROWS = 3000  # the unit drift tests size: smaller clean windows drift by chance


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus prometheus-pushgateway "
                    "prometheus-alertmanager)")
    return found


def write_log(directory: Path, frame, contract) -> Path:
    inputs = [c.name for c in contract.input_columns]
    rows = frame[inputs].astype(object).where(frame[inputs].notna(), None).to_dict("records")
    with InferenceLog(directory) as log:
        log.submit([{"request_id": f"r-{i}", "record_index": 0, "model_version": "1", "features": row,
                     "probability": 0.5, "label": "<=50K"} for i, row in enumerate(rows)])
    return directory


def slack_messages(receiver) -> list[str]:
    return [post.json().get("attachments", [{}])[0].get("title", "") for post in receiver.posts("/slack")]


def test_drift_incident_is_notified_once_by_alertmanager_and_resolved(tmp_path: Path) -> None:
    binaries = {name: binary(name) for name in ("prometheus", "prometheus-pushgateway",
                                                "prometheus-alertmanager")}
    contract = load_contract(REPO / "contracts/adult.yaml")
    rows = validate_file(REPO / "data/raw/adult.csv.gz", contract).valid.sample(frac=1.0, random_state=0)
    reference, pool = rows.iloc[:ROWS], rows.iloc[ROWS:]
    shifted = pool[pool["education"].isin(("Bachelors", "Masters", "Doctorate"))].head(ROWS)
    (tmp_path / "data/features").mkdir(parents=True)
    reference.to_parquet(tmp_path / "data/features/reference.parquet")
    ports = {name: free_port() for name in ("pushgateway", "prometheus", "alertmanager")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    with receiving() as receiver:
        (tmp_path / "slack-url").write_text(f"{receiver.url}/slack\n")
        alertmanager = yaml.safe_load((MONITORING / "alertmanager/alertmanager.yml").read_text())
        alertmanager["route"].update(group_wait="1s", group_interval="2s", repeat_interval="1h")
        alertmanager["receivers"][0]["slack_configs"][0]["api_url_file"] = str(tmp_path / "slack-url")
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))
        checked = subprocess.run([binary("amtool"), "check-config", str(tmp_path / "alertmanager.yml")],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        rules = yaml.safe_load((MONITORING / "prometheus/alerts.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "ModelDataDrift":
                    rule["for"] = "1s"
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
        config = yaml.safe_load((MONITORING / "prometheus/prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        target = f"127.0.0.1:{ports['alertmanager']}"
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] == "pushgateway"]
        config["scrape_configs"][0].update(scrape_interval="1s", scrape_timeout="1s",
                                           static_configs=[{"targets": [f"127.0.0.1:{ports['pushgateway']}"]}])
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

        processes = []
        try:
            for name, command in (
                ("pushgateway", [binaries["prometheus-pushgateway"],
                                 f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"]),
                ("alertmanager", [binaries["prometheus-alertmanager"], f"--config.file={tmp_path / 'alertmanager.yml'}",
                                  f"--storage.path={tmp_path / 'am'}", "--cluster.listen-address=",
                                  f"--web.listen-address=127.0.0.1:{ports['alertmanager']}"]),
                ("prometheus", [binaries["prometheus"], f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{ports['prometheus']}"]),
            ):
                log = tmp_path / f"{name}.log"
                processes.append(start_process(command, log))
                wait_for(lambda n=name: requests.get(f"{urls[n]}/-/ready", timeout=2).ok,
                         processes[-1], log, name)

            params = yaml.safe_load((REPO / "params.yaml").read_text())
            params["data"]["contract"] = str(REPO / "contracts/adult.yaml")
            params["monitoring"].update(report_dir=str(tmp_path / "reports"), pushgateway_url=urls["pushgateway"],
                                        webhook_url=f"{receiver.url}/job-hook", alertmanager_url=urls["alertmanager"])
            env = {k: v for k, v in os.environ.items()
                   if k not in ("PUSHGATEWAY_URL", "ALERT_WEBHOOK_URL", "ALERTMANAGER_URL")}
            env["PYTHONPATH"] = str(REPO)  # cron runs the job from the repository; here from a scratch folder

            def drift(frame, name: str) -> int:
                params["monitoring"]["inference_log_dir"] = str(write_log(tmp_path / name, frame, contract))
                (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
                done = subprocess.run([sys.executable, "-m", "mlops_template", "drift", "--params",
                                       str(tmp_path / "params.yaml")], cwd=tmp_path, env=env, capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode in (ExitCode.OK, ExitCode.ALERT), done.stdout + done.stderr[-3000:]
                return done.returncode

            assert drift(shifted, "log-shifted") == ExitCode.ALERT  # the job still exits "alert"
            wait_until(lambda: slack_messages(receiver), TIMEOUT, 0.5, "Alertmanager sent no FIRING message")
            assert drift(shifted, "log-shifted-again") == ExitCode.ALERT
            time.sleep(6)  # three group intervals: room for a repeat that must not come
            assert slack_messages(receiver) == ["FIRING: ModelDataDrift"]

            assert drift(pool.sample(ROWS, random_state=3), "log-clean") == 0  # like the reference
            wait_until(lambda: len(slack_messages(receiver)) == 2, TIMEOUT, 0.5,
                       "Alertmanager sent no RESOLVED message")
            time.sleep(4)
            assert slack_messages(receiver) == ["FIRING: ModelDataDrift", "RESOLVED: ModelDataDrift"]
            assert receiver.posts("/job-hook") == []  # the job never notified on its own
        finally:
            for process in reversed(processes):
                stop_server(process)
