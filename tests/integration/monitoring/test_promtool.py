"""Static checks of the monitoring configuration: Prometheus config and alert rules through the
real ``promtool`` (skipped when it is not installed), and the Grafana dashboard's structure
(Grafana is not packaged here, so its JSON is checked against the metrics the service exports).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboard.json"

# Metric families the service exposes on /metrics (histograms also as _bucket/_sum/_count).
SERVICE_METRICS = {
    "model_prediction_latency_seconds", "model_requests_total", "model_records_total",
    "model_rejected_requests_total", "model_predicted_class_total", "model_predicted_probability",
    "model_info", "model_inference_log_dropped_total",
    # per task: regression's predicted-value histogram, multiclass's per-class counter
    "model_prediction", "model_predictions_by_class_total",
}
BENTOML_METRICS = {
    "bentoml_service_request_total", "bentoml_service_request_duration_seconds",
    "bentoml_service_request_in_progress", "bentoml_service_adaptive_batch_size",
}
# Pushed to the Pushgateway by the drift (job model_drift) and quality (job model_quality) jobs.
PUSHED_METRICS = {
    "model_drift_share", "model_drift_detected", "model_drift_column_score",
    "model_drift_last_run_timestamp_seconds", "model_live_roc_auc", "model_live_accuracy",
    "model_live_value_per_row", "model_live_labelled_records", "model_quality_drop_fraction",
    "model_drift_column_weight", "model_prediction_drift_psi", "model_prediction_drift_detected",
    "model_live_rmse", "model_live_mae", "model_live_macro_f1",
}
KNOWN_FAMILIES = SERVICE_METRICS | BENTOML_METRICS | PUSHED_METRICS | {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "scalar", "vector", "time", "abs", "clamp_min", "clamp_max",
    "absent", "absent_over_time", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "label_replace", "label_join",
    "round", "sort", "sort_desc", "timestamp", "changes", "resets", "predict_linear", "inf", "nan",
}
PANEL_COVERAGE = {
    "request rate by outcome": {"model_requests_total"},
    "latency": {"model_prediction_latency_seconds_bucket"},
    "shed/rejected": {"model_rejected_requests_total"},
    "predicted class": {"model_predicted_class_total"},
    "probability distribution": {"model_predicted_probability_bucket"},
    "model version": {"model_info"},
    "drift": {"model_drift_share", "model_drift_column_score"},
    "live quality": {"model_live_roc_auc", "model_live_accuracy"},
    "multiclass class share": {"model_predictions_by_class_total"},
    "regression prediction distribution": {"model_prediction_bucket"},
    "prediction drift": {"model_prediction_drift_psi"},
    "drift weights": {"model_drift_column_weight"},
    "live errors (regression, multiclass)": {"model_live_rmse", "model_live_mae", "model_live_macro_f1"},
    "inference log": {"model_inference_log_dropped_total"},
    "http errors": {"bentoml_service_request_total"},
}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool in the rules' directory (rule_files paths are relative to it)."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=120)


def test_promtool_check_config() -> None:
    """prometheus.yml is valid and its rule file loads."""
    run = _promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_promtool_check_rules() -> None:
    """alerts.yml parses and every rule is valid PromQL."""
    run = _promtool("check", "rules", "alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_test_rules() -> None:
    """Every alert fires for its failure and stays quiet on healthy series (alerts_test.yml)."""
    run = _promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_severity_and_annotations_and_a_unit_test() -> None:
    """Each rule carries severity, summary, description, and is exercised by alerts_test.yml."""
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if not case.get("exp_alerts")}
    rules = _alert_rules()
    assert len(rules) >= 9
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"].get("summary") and rule["annotations"].get("description")
        assert rule["alert"] in firing, f"{rule['alert']} never shown firing in alerts_test.yml"
        assert rule["alert"] in quiet, f"{rule['alert']} never shown quiet in alerts_test.yml"


def test_scrape_config_targets() -> None:
    """The service and the Pushgateway are scraped as the alerts expect."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    service = jobs["model-service"]
    assert service["metrics_path"] == "/metrics"
    assert service["scrape_interval"] == "5s"
    assert service["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["127.0.0.1:9091"]
    assert config["rule_files"] == ["alerts.yml"]


# --- Grafana dashboard ------------------------------------------------------------------------

def _panels(dashboard: dict) -> list[dict]:
    """All panels, including those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (labels, functions, variables stripped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)  # Grafana variables
    words = re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text)
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def _known(name: str) -> bool:
    if name in KNOWN_FAMILIES:
        return True
    return any(name.endswith(s) and name[: -len(s)] in KNOWN_FAMILIES for s in HISTOGRAM_SUFFIXES)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_name_extraction() -> None:
    """The extractor sees metrics and ignores functions, labels, ranges and variables."""
    expr = ('histogram_quantile(0.99, sum by (le) (rate(model_prediction_latency_seconds_bucket'
            '{job="$job", outcome=~"a|b"}[$__rate_interval]))) / scalar(sum(up)) > vector($x)')
    assert metric_names(expr) == {"model_prediction_latency_seconds_bucket", "up"}


def test_dashboard_structure(dashboard: dict) -> None:
    """Importable shape: schema version, datasource variable, unique panel ids, grid positions."""
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_dashboard_queries_use_known_metrics(dashboard: dict) -> None:
    """Every query uses the Prometheus datasource variable and only metrics that exist."""
    queries = 0
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            unknown = {n for n in metric_names(target["expr"]) if not _known(n)}
            assert not unknown, f"panel {panel['title']!r} queries unknown metrics {unknown}"
            queries += 1
    assert queries >= 15


def test_dashboard_covers_required_panels(dashboard: dict) -> None:
    """Each view the dashboard promises queries its metric."""
    used = set()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    for view, metrics in PANEL_COVERAGE.items():
        assert metrics <= used, f"{view}: {metrics - used} not on the dashboard"
    assert {"model_drift_detected", "model_drift_last_run_timestamp_seconds",
            "model_quality_drop_fraction"} <= used
