"""The canary's pure logic: reading /metrics, judging two versions, and saying what it did."""

import socket

import pytest

from mlops_template.core.params import DeploySection
from mlops_template.ops.canary import (
    CanaryError,
    VersionFigures,
    fetch_metrics,
    judge,
    outcome_line,
    parse_metrics,
)

DEFAULTS = DeploySection(model_name="m", service_name="s")  # the canary limits' defaults

METRICS = """\
# TYPE model_version_requests_total counter
model_version_requests_total{model_version="7",outcome="success"} 900.0
model_version_requests_total{model_version="7",outcome="error"} 1.0
model_version_requests_total{model_version="8",outcome="success"} 150.0
model_version_requests_total{model_version="8",outcome="error"} 0.0
# TYPE model_prediction_latency_seconds histogram
model_prediction_latency_seconds_sum{model_version="7"} 9.0
model_prediction_latency_seconds_count{model_version="7"} 901.0
model_prediction_latency_seconds_sum{model_version="8"} 1.5
model_prediction_latency_seconds_count{model_version="8"} 150.0
model_requests_total{outcome="success"} 1050.0
"""


def test_parse_metrics_reads_outcomes_and_latency_per_version():
    figures = parse_metrics(METRICS)
    assert set(figures) == {"7", "8"}
    assert figures["7"].requests == 901 and figures["7"].error == 1
    assert figures["8"].mean_latency == pytest.approx(0.01)


def test_judge_waits_promotes_and_rolls_back():
    figures = parse_metrics(METRICS)
    assert judge("7", "8", figures, DEFAULTS).action == "promote"
    few = {**figures, "8": VersionFigures(success=10)}
    waiting = judge("7", "8", few, DEFAULTS)
    assert waiting.action == "wait" and "fewer than 100" in waiting.reasons[0]
    failing = {**figures, "8": VersionFigures(success=150, error=10, latency_sum=1.5, latency_count=160)}
    assert judge("7", "8", failing, DEFAULTS).action == "rollback"
    slow = {**figures, "8": VersionFigures(success=150, latency_sum=30.0, latency_count=150)}
    decision = judge("7", "8", slow, DEFAULTS)
    assert decision.action == "rollback" and any("latency" in r and ">" in r for r in decision.reasons)


def test_outcome_line_says_what_was_done_and_what_to_commit():
    assert "Commit it: git add deployments" in outcome_line("promote", dry_run=False)
    assert "would roll the challenger back" in outcome_line("rollback", dry_run=True)
    assert "nothing changed" in outcome_line("promote", dry_run=True)
    assert "exit 4" in outcome_line("wait", dry_run=False)


def test_an_unreachable_metrics_url_is_named():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(CanaryError, match=url):
            fetch_metrics(url)
