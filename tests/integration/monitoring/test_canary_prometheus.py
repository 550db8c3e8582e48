"""A canary judged across replicas: ``canary decide --prometheus-url`` sums what one replica hides.

Three replicas expose the service's per-version metrics; the challenger fails only on the
third. A real Prometheus scrapes all three, and the decision from its PromQL sums rolls the
challenger back, while judging replica 1's ``/metrics`` alone would have promoted it. The
replicas here are stand-ins that serve fixed metric texts in the service's exposition format
(the same series ``tests/integration/serving`` reads from a real ``bentoml serve``): what is
under test is the query across replicas, so the challenger's failures are set, not provoked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from mlops_template.core.exitcodes import ExitCode
from mlops_template.serving import routing
from tests.support.servers import REGISTER_TWO_VERSIONS, free_port, start_process, stop_server, wait_for

REPO = Path(__file__).resolve().parents[3]


def exposition(challenger_errors: int) -> str:
    """One replica's /metrics: 300 champion requests, 40 challenger ones (some failed)."""
    lines = ["# TYPE model_version_requests_total counter"]
    for version, ok, failed in (("1", 300, 0), ("2", 40 - challenger_errors, challenger_errors)):
        lines += [f'model_version_requests_total{{model_version="{version}",outcome="success"}} {ok}',
                  f'model_version_requests_total{{model_version="{version}",outcome="error"}} {failed}']
    lines.append("# TYPE model_prediction_latency_seconds histogram")
    for version, count in (("1", 300), ("2", 40)):
        lines += [f'model_prediction_latency_seconds_bucket{{model_version="{version}",le="+Inf"}} {count}',
                  f'model_prediction_latency_seconds_sum{{model_version="{version}"}} {count * 0.01}',
                  f'model_prediction_latency_seconds_count{{model_version="{version}"}} {count}']
    return "\n".join(lines) + "\n"


def replica(text: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def canary(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROUTING_FILE": str(workdir / "routing.json"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mlops_template", "canary", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120)


def test_challenger_errors_on_one_replica_roll_it_back_through_prometheus(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus") or pytest.skip("prometheus is not installed (apt-get install prometheus)")
    replicas = [replica(exposition(errors)) for errors in (0, 0, 10)]
    targets = [f"127.0.0.1:{server.server_address[1]}" for server in replicas]
    port = free_port()
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "model-service", "static_configs": [{"targets": targets}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    document = routing.champion_only("adult-income", "adult-income:a", "1", 0.1)
    document["challenger"] = {"model_tag": "adult-income:b", "model_version": "2"}
    routing.write_routing(tmp_path / "routing.json", document)
    subprocess.run([sys.executable, "-c", REGISTER_TWO_VERSIONS], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    log = tmp_path / "prometheus.log"
    server = start_process([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        def all_scraped() -> bool:
            result = requests.get(f"{url}/api/v1/query", params={"query": "count(model_version_requests_total)"},
                                  timeout=5).json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) == 3 * 4  # 4 series on each replica
        wait_for(all_scraped, server, log, "prometheus scraping 3 replicas")

        one = canary(tmp_path, "decide", "--metrics-url", f"http://{targets[0]}/metrics", "--min-requests", "20",
                     "--dry-run")
        assert one.returncode == 0, one.stdout + one.stderr  # replica 1 alone looks healthy
        summed = canary(tmp_path, "decide", "--prometheus-url", url, "--min-requests", "20")
        assert summed.returncode == ExitCode.ROLLED_BACK, summed.stdout + summed.stderr
        verdict = json.loads(summed.stdout.strip().splitlines()[-1])
        assert verdict["action"] == "rollback" and any("error rate" in r for r in verdict["reasons"]), verdict
        assert verdict["figures"]["2"]["requests"] == 120  # 40 on each of the 3 replicas
        assert routing.read_routing(tmp_path / "routing.json")["challenger"] is None
    finally:
        stop_server(server)
        for replica_server in replicas:
            replica_server.shutdown()
