"""AlertSink: delivery with retries, one notification per incident, never raising."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mlops_template.monitoring.alerts import LOG_FILE, Alert, AlertSink

ALERT = Alert(key="drift", title="Data drift on model 'adult-income'", severity="warning",
              figures={"drift_share": "0.64 > 0.20"}, report_path="monitoring/reports/drift.html")


def sink(tmp_path: Path, url: str | None, **kwargs) -> AlertSink:
    return AlertSink(tmp_path, url, backoff=0.01, **kwargs)


def audit(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]


def test_slack_payload_and_retry_after_server_error(tmp_path, receiver) -> None:
    receiver.fail_next = 2
    assert sink(tmp_path, f"{receiver.url}/hook").fire(ALERT) == "sent"
    assert len(receiver.posts()) == 3  # two 500s, then accepted
    payload = receiver.posts()[-1].json()
    assert payload == {
        "text": "[WARNING] Data drift on model 'adult-income'",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Data drift on model 'adult-income'*\nSeverity: `warning`\n• drift_share: `0.64 > 0.20`\n"
            "Report: `monitoring/reports/drift.html`")}}],
    }


def test_one_notification_per_incident_across_processes(tmp_path, receiver) -> None:
    url = f"{receiver.url}/hook"
    assert sink(tmp_path, url).fire(ALERT) == "sent"
    assert sink(tmp_path, url).fire(ALERT) == "suppressed"  # a new sink: state is on disk
    assert sink(tmp_path, url).resolve("drift", ALERT.title) == "sent"
    assert sink(tmp_path, url).resolve("drift", ALERT.title) == "none"  # nothing open any more
    assert sink(tmp_path, url).fire(ALERT) == "sent"  # a new incident
    texts = [p.json()["text"] for p in receiver.posts()]
    assert [t.split("]")[0] for t in texts] == ["[WARNING", "[RESOLVED", "[WARNING"]
    assert [(a["status"], a["delivery"]) for a in audit(tmp_path)] == [
        ("firing", "sent"), ("resolved", "sent"), ("firing", "sent")]


def test_reminder_after_dedup_window(tmp_path, receiver) -> None:
    url = f"{receiver.url}/hook"
    assert sink(tmp_path, url, dedup_hours=0).fire(ALERT) == "sent"
    assert sink(tmp_path, url, dedup_hours=0).fire(ALERT) == "sent"
    state = json.loads((tmp_path / "alert-state.json").read_text())
    assert state["drift"]["since"] <= state["drift"]["notified"]  # still the same incident


def test_client_error_is_not_retried(tmp_path, receiver) -> None:
    receiver.fail_next, receiver.fail_status = 5, 400
    assert sink(tmp_path, f"{receiver.url}/hook").fire(ALERT) == "failed"
    assert len(receiver.posts()) == 1


def test_unreachable_webhook_fails_quietly_and_retries_next_time(tmp_path, dead_url, receiver) -> None:
    assert sink(tmp_path, dead_url).fire(ALERT) == "failed"
    assert sink(tmp_path, f"{receiver.url}/hook").fire(ALERT) == "sent"  # not deduplicated
    assert [a["delivery"] for a in audit(tmp_path)] == ["failed", "sent"]


def test_without_webhook_alerts_go_to_the_log(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="mlops_template.monitoring.alerts"):
        assert sink(tmp_path, None).fire(ALERT) == "logged"
        assert sink(tmp_path, None).fire(ALERT) == "suppressed"
    assert "Data drift" in caplog.text
    assert [a["delivery"] for a in audit(tmp_path)] == ["logged"]


def test_broken_state_never_raises(tmp_path) -> None:
    (tmp_path / "alert-state.json").write_text("{not json")
    assert sink(tmp_path, None).fire(ALERT) == "logged"
    assert sink(tmp_path / "file-not-dir" / "x", None).fire(ALERT) == "logged"
    (tmp_path / "blocked").write_text("a file where the state directory should be")
    assert sink(tmp_path / "blocked", None).fire(ALERT) == "failed"
