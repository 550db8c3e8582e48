"""Alerts from the monitoring jobs: a Slack-compatible webhook, or a log when none is set.

An alert has a key (``drift``, ``quality``): one incident per key. The first ``fire`` of an
incident notifies; later ones within ``dedup_hours`` are suppressed, and after that a reminder
goes out. ``resolve`` ends the incident (with a "resolved" notice), so the next ``fire`` starts
a new one. The state lives in a small JSON file so that repeated cron runs, each a new process,
do not alert again. Every notification is also appended to ``alerts.jsonl`` as an audit trail.

Delivery is retried with exponential backoff on connection errors, timeouts, 429 and 5xx. An
alert that could not be delivered is logged as an error and not recorded as sent, so the next
run tries again. Nothing here raises into the job that called it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops_template.core.io import write_json

logger = logging.getLogger(__name__)

STATE_FILE = "alert-state.json"
LOG_FILE = "alerts.jsonl"
MAX_BLOCK_TEXT = 3000  # Slack rejects section blocks with longer text


@dataclass(frozen=True)
class Alert:
    """One condition worth telling a person about."""

    key: str
    title: str
    severity: str = "warning"
    figures: Mapping[str, Any] = field(default_factory=dict)
    report_path: str | None = None

    def text(self) -> str:
        """Plain-text summary, the notification's fallback text."""
        return f"[{self.severity.upper()}] {self.title}"

    def markdown(self) -> str:
        """Slack mrkdwn body: title, severity, key figures and where the report is."""
        lines = [f"*{self.title}*", f"Severity: `{self.severity}`"]
        lines += [f"• {name}: `{value}`" for name, value in self.figures.items()]
        if self.report_path:
            lines.append(f"Report: `{self.report_path}`")
        return "\n".join(lines)[:MAX_BLOCK_TEXT]


def slack_payload(text: str, markdown: str) -> dict[str, Any]:
    """A message Slack's incoming webhooks accept: fallback text plus one mrkdwn section."""
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": markdown}}]}


class AlertSink:
    """Sends alerts to ``webhook_url`` (or logs them), once per incident, never raising."""

    def __init__(
        self,
        state_dir: Path,
        webhook_url: str | None = None,
        dedup_hours: float = 6.0,
        tries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.webhook_url = webhook_url or None
        self.dedup = timedelta(hours=dedup_hours)
        self.tries = tries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout

    def fire(self, alert: Alert) -> str:
        """Notify unless this incident was notified within the dedup window.

        Returns what happened: ``sent`` (webhook), ``logged`` (no webhook configured),
        ``suppressed`` (duplicate), ``failed`` (delivery failed; retried on the next call).
        """
        try:
            with self._state() as state:
                now = datetime.now(UTC)
                incident = state.get(alert.key)
                if incident and now - datetime.fromisoformat(incident["notified"]) < self.dedup:
                    logger.info("alert %r suppressed: already notified at %s", alert.key, incident["notified"])
                    return "suppressed"
                outcome = self._notify(alert.key, "firing", alert.text(), alert.markdown())
                if outcome != "failed":
                    started = incident["since"] if incident else now.isoformat()
                    state[alert.key] = {"since": started, "notified": now.isoformat()}
                return outcome
        except Exception:
            logger.exception("alert %r could not be processed", alert.key)
            return "failed"

    def resolve(self, key: str, title: str) -> str:
        """End the incident ``key`` if one is open, with a "resolved" notice; else do nothing.

        Returns ``none`` when no incident was open, otherwise the delivery outcome.
        """
        try:
            with self._state() as state:
                if key not in state:
                    return "none"
                incident = state.pop(key)
                text = f"[RESOLVED] {title}"
                markdown = f"*Resolved: {title}*\nOpen since `{incident['since']}`"
                return self._notify(key, "resolved", text, markdown)
        except Exception:
            logger.exception("alert %r could not be resolved", key)
            return "failed"

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The dedup state, locked against concurrent jobs, saved back on exit."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        with open(self.state_dir / f".{STATE_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            except (json.JSONDecodeError, OSError):
                logger.warning("alert state %s unreadable; starting afresh", path)
                state = {}
            yield state
            write_json(path, state)

    def _notify(self, key: str, status: str, text: str, markdown: str) -> str:
        """Deliver one notification and record it in the audit log."""
        if self.webhook_url:
            outcome = "sent" if self._post(slack_payload(text, markdown)) else "failed"
        else:
            outcome = "logged"
        if outcome == "failed":
            logger.error("alert %r NOT delivered: %s", key, text)
        else:
            logger.warning("alert %r %s: %s", key, status, text)
        record = {"ts": datetime.now(UTC).isoformat(), "key": key, "status": status,
                  "delivery": outcome, "text": text, "detail": markdown}
        with open(self.state_dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        return outcome

    def _post(self, payload: dict[str, Any]) -> bool:
        """POST JSON to the webhook, retrying transient failures; True when accepted."""
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(1, self.tries + 1):
            request = urllib.request.Request(
                self.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    logger.error("webhook refused the alert: HTTP %d %s", exc.code, exc.reason)
                    return False
                error: Exception = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = exc
            logger.warning("webhook attempt %d/%d failed: %s", attempt, self.tries, error)
            if attempt < self.tries:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
        return False
