"""A real Prometheus scrapes a real ``bentoml serve`` and a real Pushgateway, with the repository's
configuration (targets and intervals rewritten for the test), and the metrics come back through
Prometheus' HTTP API.

The bento is a small model packaged by ``scripts/make_test_bento.py`` into a temporary BentoML
home, so this runs in a fresh clone too. Skipped when Debian's ``prometheus`` or
``prometheus-pushgateway`` binaries are missing (apt-get install prometheus prometheus-pushgateway).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.servers import free_port, stop_server
from tests.support.waiting import exited, wait_until

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboard.json"
STARTUP_TIMEOUT = 90.0
QUERY_TIMEOUT = 60.0
PREDICTIONS = 5
RECORD = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
    "education_num": 13, "marital_status": "Never-married", "occupation": "Adm-clerical",
    "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital_gain": 2174,
    "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States",
}


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"{names[0]} is not installed (Debian: apt-get install prometheus "
                "prometheus-pushgateway)")


def _start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A background process leading its own process group, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the log if the process dies or hangs."""
    wait_until(lambda: requests.get(url, timeout=2).status_code == 200, STARTUP_TIMEOUT, 0.3,
               f"{process.args[0]}: {url} answering 200", ignore=(requests.RequestException,),
               abort=exited(process), context=lambda: log.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """bentoml serve + Pushgateway + Prometheus (the repository's config, ports rewritten)."""
    prometheus = _binary("prometheus")
    pushgateway = _binary("prometheus-pushgateway", "pushgateway")
    root = tmp_path_factory.mktemp("prometheus")
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_test_bento.py"),
         "--export-dir", str(root / "export"), "--model-version", "prom-test"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    bento_tag = json.loads(made.stdout.strip().splitlines()[-1])["bento_tag"]

    ports = {name: free_port() for name in ("service", "pushgateway", "prometheus")}
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config.pop("alerting", None)  # no Alertmanager in the test
    config["global"]["evaluation_interval"] = "1s"
    for job in config["scrape_configs"]:
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        port = ports["service"] if job["job_name"] == "model-service" else ports["pushgateway"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy2(PROMETHEUS_DIR / "alerts.yml", root / "alerts.yml")

    processes = []
    try:
        logs = {name: root / f"{name}.log" for name in ports}
        service = _start([sys.executable, "-m", "bentoml", "serve", bento_tag, "--host",
                          "127.0.0.1", "--port", str(ports["service"])], logs["service"], env)
        processes.append(service)
        gateway = _start([pushgateway, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"],
                         logs["pushgateway"])
        processes.append(gateway)
        server = _start([prometheus, f"--config.file={root / 'prometheus.yml'}",
                         f"--storage.tsdb.path={root / 'tsdb'}",
                         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                        logs["prometheus"])
        processes.append(server)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        _wait_http(f"{urls['pushgateway']}/-/ready", gateway, logs["pushgateway"])
        _wait_http(f"{urls['prometheus']}/-/ready", server, logs["prometheus"])
        _wait_http(f"{urls['service']}/readyz", service, logs["service"])
        yield {"urls": urls, "logs": logs}
    finally:
        for process in reversed(processes):
            stop_server(process)


def _query(prometheus: str, expr: str) -> list[dict]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def _eventually(prometheus: str, expr: str, check) -> list[dict]:
    """Query until ``check(result)`` holds (scrapes are periodic); return that result."""
    seen: list[dict] = []

    def satisfied() -> list[dict]:
        seen[:] = _query(prometheus, expr)
        return list(seen) if seen and check(seen) else []

    return wait_until(satisfied, QUERY_TIMEOUT, 1, f"{expr} satisfying the check",
                      context=lambda: f"last result {seen}")


def _value(result: list[dict]) -> float:
    return float(result[0]["value"][1])


def test_service_is_scraped(stack: dict) -> None:
    """up{job="model-service"} is 1: Prometheus reaches the service's /metrics."""
    _eventually(stack["urls"]["prometheus"], 'up{job="model-service"}', lambda r: _value(r) == 1)


def test_prediction_requests_counted_through_prometheus(stack: dict) -> None:
    """Predictions sent to the service come back as request counters through Prometheus."""
    urls = stack["urls"]
    for _ in range(PREDICTIONS):
        response = requests.post(f"{urls['service']}/predict", json={"records": [RECORD]},
                                 timeout=30)
        assert response.status_code == 200, response.text
    bad = requests.post(f"{urls['service']}/predict", json={"records": [{**RECORD, "age": "x"}]},
                        timeout=30)
    assert bad.status_code == 400
    _eventually(urls["prometheus"],
                'sum(bentoml_service_request_total{job="model-service", endpoint="/predict", '
                'http_response_code="200"})', lambda r: _value(r) >= PREDICTIONS)
    # The service's own metrics (mlops_template/serving/metrics.py), which the alerts use.
    _eventually(urls["prometheus"],
                'sum(model_requests_total{job="model-service", outcome="success"})',
                lambda r: _value(r) >= PREDICTIONS)
    _eventually(urls["prometheus"],
                'sum(model_prediction_latency_seconds_count{job="model-service"})',
                lambda r: _value(r) >= PREDICTIONS)
    info = _eventually(urls["prometheus"], 'model_info{job="model-service"}',
                       lambda r: _value(r) == 1)
    assert info[0]["metric"]["model_version"] == "prom-test"


def test_pushed_gauge_read_back_with_its_own_job_label(stack: dict) -> None:
    """A gauge pushed to the Pushgateway is scraped with honor_labels: job stays model_drift."""
    urls = stack["urls"]
    body = "model_drift_share 0.125\nmodel_drift_detected 0\n"
    response = requests.put(f"{urls['pushgateway']}/metrics/job/model_drift", data=body,
                            timeout=10)
    assert response.status_code in (200, 202), response.text
    result = _eventually(urls["prometheus"], 'model_drift_share{job="model_drift"}',
                         lambda r: _value(r) == 0.125)
    assert result[0]["metric"]["job"] == "model_drift"


def test_alert_rules_loaded_and_quiet(stack: dict) -> None:
    """Real Prometheus loads alerts.yml; with a healthy service, ModelServiceDown is not firing."""
    prometheus = stack["urls"]["prometheus"]
    _eventually(prometheus, 'up{job="model-service"}', lambda r: _value(r) == 1)
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert len(rules) >= 9
    assert all(rule["health"] in ("ok", "unknown") for rule in rules.values()), rules
    assert rules["ModelServiceDown"]["state"] == "inactive"


def test_dashboard_queries_are_valid_promql(stack: dict) -> None:
    """Every Grafana query, its variables filled in, is accepted by the real Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    substitutions = {"$__rate_interval": "1m", "$job": "model-service",
                     "$eval_roc_auc": "0.9", "$eval_accuracy": "0.8"}
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            _query(stack["urls"]["prometheus"], expr)
            checked += 1
    assert checked >= 15
