"""Canary releases: send a share of traffic to a challenger, then promote it or roll it back.

Usage (from the repository root)::

    mlops-template canary start --version V [--share 0.1]
    mlops-template canary decide (--prometheus-url URL | --metrics-url URL | --metrics-file FILE)
                                 [--labels FILE] [--min-requests N] [--dry-run]
    mlops-template canary status

``start`` makes registered version ``V`` the routing file's challenger (its BentoML model tag
comes from ``deployments/history.jsonl`` or its MLflow ``model_tag`` tag; ``deploy.strategy:
canary`` packages a blessed candidate and starts its canary this way) and moves the MLflow alias
``challenger`` to it. The service then sends the requests whose routing key hashes under the
share (:func:`mlops_template.serving.routing.routes_to_challenger`) to the challenger.

``decide`` reads the live per-version figures, summed over every replica by Prometheus
(``--prometheus-url``, see :data:`PROMQL`), or from one service's ``/metrics`` (a single host;
``--metrics-url``, or a captured ``--metrics-file``): the error rate
(``model_version_requests_total``), the mean scoring latency
(``model_prediction_latency_seconds``) and, with ``--labels`` (ground truth joined with the
inference log), the task's live metrics (binary: ROC AUC and value per row; multiclass: accuracy
and macro-F1; regression: RMSE and MAE, where a rise is a drop). The challenger is promoted unless its error rate
exceeds ``deploy.canary_max_error_rate``, its mean latency exceeds the champion's times
``deploy.canary_max_latency_ratio``, or its live quality is more than
``monitoring.quality_drop_fraction`` below the champion's; otherwise it is rolled back. Either
way the routing file, MLflow aliases, ``deployments/champion.json`` and the history record the
decision and its reasons.

Exit codes (:class:`~mlops_template.core.exitcodes.ExitCode`): 0 promoted (or ``start``/``status``
done), 5 rolled back, 4 not enough challenger traffic yet (``deploy.canary_min_requests``), 65 a
file or value given is wrong (``--labels``, ``--metrics-file``, ``--share``), 69 a shared service
(tracking server, its database, the object store) or the metrics URL does not answer, checked
before anything changes, 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_template.core.contract import load_contract
from mlops_template.core.exitcodes import ExitCode, ServiceUnavailable, UserError
from mlops_template.core.params import DeploySection, Params
from mlops_template.core.params import load as load_params
from mlops_template.core.tasks import task_of
from mlops_template.monitoring import Settings as MonitoringSettings
from mlops_template.ops import lease, records, transitions
from mlops_template.serving import routing

logger = logging.getLogger(__name__)


class CanaryError(RuntimeError):
    """No canary is running, or the version asked for cannot be served."""


class FiguresUnavailable(CanaryError, ServiceUnavailable):
    """The ``--metrics-url`` or ``--prometheus-url`` given does not answer (exit 69, the URL named)."""


@dataclass
class VersionFigures:
    """Live figures of one model version, read from ``/metrics``."""

    success: float = 0.0
    error: float = 0.0
    latency_sum: float = 0.0
    latency_count: float = 0.0

    @property
    def requests(self) -> float:
        return self.success + self.error

    @property
    def error_rate(self) -> float | None:
        return self.error / self.requests if self.requests else None

    @property
    def mean_latency(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


@dataclass
class Decision:
    """What ``decide`` concluded, and why."""

    action: str  # "promote", "rollback" or "wait"
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def parse_metrics(text: str) -> dict[str, VersionFigures]:
    """Per-version request outcomes and latency from a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    figures: dict[str, VersionFigures] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            version = sample.labels.get("model_version")
            if version is None:
                continue
            item = figures.setdefault(version, VersionFigures())
            if sample.name == "model_version_requests_total":
                outcome = sample.labels.get("outcome")
                if outcome in ("success", "error"):
                    setattr(item, outcome, getattr(item, outcome) + sample.value)
            elif sample.name == "model_prediction_latency_seconds_sum":
                item.latency_sum += sample.value
            elif sample.name == "model_prediction_latency_seconds_count":
                item.latency_count += sample.value
    return figures


PROMQL = {  # summed over every replica Prometheus scrapes, by model version
    "requests": "sum by (model_version, outcome) (model_version_requests_total)",
    "latency_sum": "sum by (model_version) (model_prediction_latency_seconds_sum)",
    "latency_count": "sum by (model_version) (model_prediction_latency_seconds_count)",
}


def prometheus_figures(url: str) -> dict[str, VersionFigures]:
    """Per-version outcomes and latency of every replica, from Prometheus' query API.

    With several replicas one ``/metrics`` shows one replica's traffic only; Prometheus scrapes
    them all, so the sums below judge the challenger on all of its requests.
    """
    import urllib.parse
    import urllib.request

    def query(expr: str) -> list[dict]:
        address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(address, timeout=10) as response:  # the operator's own URL
                body = json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors; ValueError: not JSON
            raise FiguresUnavailable(f"Prometheus {url} cannot be queried: {getattr(exc, 'reason', exc)}") from None
        if body.get("status") != "success":
            raise CanaryError(f"Prometheus query {expr!r} failed: {body}")
        return body["data"]["result"]

    figures: dict[str, VersionFigures] = {}
    for item in query(PROMQL["requests"]):
        labels, value = item["metric"], float(item["value"][1])
        if labels.get("model_version") and labels.get("outcome") in ("success", "error"):
            version = figures.setdefault(labels["model_version"], VersionFigures())
            setattr(version, labels["outcome"], getattr(version, labels["outcome"]) + value)
    for field_name in ("latency_sum", "latency_count"):
        for item in query(PROMQL[field_name]):
            if item["metric"].get("model_version"):
                version = figures.setdefault(item["metric"]["model_version"], VersionFigures())
                setattr(version, field_name, float(item["value"][1]))
    return figures


def fetch_metrics(url: str) -> str:
    """The service's ``/metrics`` text; CanaryError naming ``url`` when it cannot be read.

    A service that requires API keys serves ``/metrics`` only with one: ``$SERVICE_API_KEY`` is
    sent as ``Authorization: Bearer``.
    """
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {os.environ['SERVICE_API_KEY']}"} if os.environ.get("SERVICE_API_KEY") else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        hint = " (set SERVICE_API_KEY to a key of the service)" if exc.code == 401 else ""
        raise CanaryError(f"{url} answered HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FiguresUnavailable(f"{url} cannot be read: {getattr(exc, 'reason', exc)}") from None


def live_quality_by_version(labels: Path, log_dir: Path | str, params: Params) -> dict[str, dict]:
    """The task's live metrics of each version, from ground truth joined with the log."""
    from mlops_template.monitoring.quality import live_quality, read_ground_truth
    from mlops_template.serving.inference_log import read_log

    log, truth = read_log(log_dir), read_ground_truth(labels)
    contract = load_contract(params.data.contract)
    value_matrix = params.evaluate.value_matrix
    return {str(version): live_quality(part, truth, contract, value_matrix)
            for version, part in log.groupby("model_version")}


def judge(champion: str, challenger: str, figures: dict[str, VersionFigures], cfg: DeploySection,
          quality: dict[str, dict] | None = None, drop_fraction: float = 0.2,
          min_labelled: int = 100, directions: dict[str, str] | None = None) -> Decision:
    """Promote, roll back or wait, from the two versions' live figures.

    ``directions`` are the task's live metrics (:attr:`~mlops_template.core.tasks.Task.live_metrics`;
    default binary's ROC AUC and value per row), compared challenger against champion.
    """
    new, old = figures.get(challenger, VersionFigures()), figures.get(champion, VersionFigures())
    summary = {v: {"requests": f.requests, "error_rate": f.error_rate, "mean_latency_s": f.mean_latency}
               for v, f in ((champion, old), (challenger, new))}
    if new.requests < max(1, cfg.canary_min_requests):
        return Decision("wait", [f"challenger v{challenger} answered {new.requests:.0f} requests, "
                                 f"fewer than {cfg.canary_min_requests}"], summary)
    reasons, failed = [], False
    if new.error_rate > cfg.canary_max_error_rate:
        failed = True
        reasons.append(f"error rate {new.error_rate:.4f} > {cfg.canary_max_error_rate}")
    else:
        reasons.append(f"error rate {new.error_rate:.4f} <= {cfg.canary_max_error_rate}")
    if new.mean_latency is not None and old.mean_latency:
        ratio = new.mean_latency / old.mean_latency
        failed |= ratio > cfg.canary_max_latency_ratio
        reasons.append(f"mean latency {ratio:.2f}x the champion's "
                       f"({'>' if ratio > cfg.canary_max_latency_ratio else '<='} "
                       f"{cfg.canary_max_latency_ratio}x)")
    else:
        reasons.append("latency not compared: no champion latency observed")
    failed |= _judge_quality(champion, challenger, quality, drop_fraction, min_labelled, reasons,
                             summary, directions)
    return Decision("rollback" if failed else "promote", reasons, summary)


def _judge_quality(champion: str, challenger: str, quality: dict[str, dict] | None,
                   drop_fraction: float, min_labelled: int, reasons: list[str],
                   summary: dict[str, Any], directions: dict[str, str] | None = None) -> bool:
    """Append the quality verdict to ``reasons``; True when the challenger is clearly worse."""
    if quality is None:
        reasons.append("quality not compared: no --labels given")
        return False
    from mlops_template.monitoring.quality import compare

    new, old = quality.get(challenger, {}), quality.get(champion, {})
    for version, live in ((champion, old), (challenger, new)):
        summary[version]["quality"] = live
    labelled = min(new.get("labelled_records", 0), old.get("labelled_records", 0))
    if labelled < min_labelled:
        reasons.append(f"quality not compared: {labelled} labelled records, fewer than {min_labelled}")
        return False
    verdict = compare(new, old, drop_fraction, directions)
    reasons.append(f"live quality drop vs champion {verdict['drop_fraction']:.3f} "
                   f"({'>' if verdict['quality_drop'] else '<='} {drop_fraction})")
    return bool(verdict["quality_drop"])


def start(params: Params, version: str, share: float, why: str,
          model_tag: str | None = None, model_sha256: str | None = None) -> dict[str, Any]:
    """Make ``version`` the challenger in the routing file, MLflow and the history.

    The challenger's ``model_sha256`` is the deployment record's (the argument, else the history's
    promotion record); the current document must carry the deploy key's signature when one is set.
    Runs under the transition lease (:class:`~mlops_template.ops.lease.Locked` if another holds it).
    """
    name, mlflow_config = params.deploy.model_name, params.mlflow
    with lease.held("canary start"):
        serving = transitions.read_serving()
        if serving.document is None:
            raise CanaryError(f"no routing document at {serving.location}: deploy a champion first")
        if serving.document["champion"]["model_version"] == str(version):
            raise CanaryError(f"v{version} already is the champion")
        if model_tag is None:
            try:
                known = records.deployment_of(records.read(), mlflow_config, name, version)
            except records.RecordError as exc:
                raise CanaryError(str(exc)) from exc
            model_tag, model_sha256 = known["model_tag"], model_sha256 or known.get("sha256")
        return transitions.start_challenger(serving, name, str(version), model_tag, model_sha256, share, why,
                                            mlflow_config)


def _challenger_deployment(name: str, mlflow_config: dict, challenger: dict[str, Any]) -> dict[str, Any]:
    """The challenger's deployment record: the one deploy wrote, else what history knows."""
    recorded = records.read_record()["challenger"]
    if recorded and recorded["model_version"] == challenger["model_version"]:
        return recorded
    known = records.deployment_of(records.read(), mlflow_config, name, challenger["model_version"])
    return records.full_deployment({**known, "model_name": name, **challenger})


def apply(params: Params, decision: Decision, serving: transitions.Serving) -> dict[str, Any]:
    """Carry out a promote or rollback decision on ``serving`` (read under the lease); the history entry."""
    name, mlflow_config = params.deploy.model_name, params.mlflow
    challenger = serving.document["challenger"] if serving.document else None
    if challenger is None:
        raise CanaryError("no canary is running: the routing file has no challenger")
    deployment = (_challenger_deployment(name, mlflow_config, challenger) if decision.action == "promote"
                  else None)
    return transitions.end_challenger(serving, decision.action, deployment, decision.reasons, decision.figures,
                                      mlflow_config)


def decide(params: Params, figures: dict[str, VersionFigures], labels: Path | None,
           min_requests: int | None, dry_run: bool) -> Decision:
    """Judge the running canary from the live ``figures`` and, unless ``dry_run``, act on it."""
    cfg = params.deploy
    if min_requests is not None:
        cfg = cfg.model_copy(update={"canary_min_requests": min_requests})
    with contextlib.nullcontext() if dry_run else lease.held("canary decide"):
        return _decide(params, cfg, figures, labels, dry_run)


def _decide(params: Params, cfg: DeploySection, figures: dict[str, VersionFigures], labels: Path | None,
            dry_run: bool) -> Decision:
    """:func:`decide` once the lease is held (none for a dry run, which changes nothing)."""
    serving = transitions.read_serving(verify=not dry_run)
    document = serving.document
    if document is None:
        raise CanaryError(f"no routing document at {serving.location}: no canary is running")
    if document["challenger"] is None:
        raise CanaryError("no canary is running: the routing file has no challenger")
    champion = document["champion"]["model_version"]
    challenger = document["challenger"]["model_version"]
    quality = directions = None
    if labels is not None:
        quality = live_quality_by_version(labels, MonitoringSettings.from_params(params).inference_log_dir, params)
        directions = task_of(load_contract(params.data.contract)).live_metrics
    decision = judge(champion, challenger, figures, cfg, quality, params.monitoring.quality_drop_fraction,
                     params.monitoring.quality_min_labelled, directions)
    logger.info("canary v%s vs v%s: %s (%s)", challenger, champion, decision.action,
                "; ".join(decision.reasons))
    if decision.action != "wait" and not dry_run:
        apply(params, decision, serving)
    return decision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands and options of ``mlops-template canary``."""
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="make a registered version the challenger")
    begin.add_argument("--version", required=True)
    begin.add_argument("--share", type=float, help="challenger's share (default deploy.canary_share)")
    begin.add_argument("--reason", default="manual canary start")
    judge_cmd = commands.add_parser("decide", help="promote or roll back the challenger")
    source = judge_cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus-url", help="Prometheus: figures summed over every replica")
    source.add_argument("--metrics-url", help="one service's /metrics URL (a single replica)")
    source.add_argument("--metrics-file", type=Path, help="a captured /metrics text")
    judge_cmd.add_argument("--labels", type=Path, help="ground truth (.csv/.jsonl) for quality")
    judge_cmd.add_argument("--min-requests", type=int)
    judge_cmd.add_argument("--dry-run", action="store_true", help="decide but change nothing")
    commands.add_parser("status", help="print the routing file")


def handle(args: argparse.Namespace) -> int:
    """Run ``start``, ``decide`` or ``status`` (the shared-services preflight has passed, but for status)."""
    if args.command == "status":
        print(json.dumps(routing.read_routing(), indent=2), flush=True)
        return ExitCode.OK
    params = load_params()
    if args.command == "start":
        if args.share is not None and not 0.0 <= args.share <= 1.0:
            raise UserError(f"--share {args.share}: the challenger's share must lie in [0, 1]")
        share = args.share if args.share is not None else params.deploy.canary_share
        item = start(params, args.version, share, args.reason)
        print(json.dumps(item), flush=True)
        return ExitCode.OK
    for option, path in (("--metrics-file", args.metrics_file), ("--labels", args.labels)):
        if path is not None and not path.is_file():
            raise UserError(f"{option} {path}: no such file")
    if args.prometheus_url:
        figures = prometheus_figures(args.prometheus_url)
    else:
        figures = parse_metrics(fetch_metrics(args.metrics_url) if args.metrics_url
                                else args.metrics_file.read_text(encoding="utf-8"))
    decision = decide(params, figures, args.labels, args.min_requests, args.dry_run)
    print(outcome_line(decision.action, args.dry_run), flush=True)
    print(json.dumps({"action": decision.action, "reasons": decision.reasons,  # last line: for scripts
                      "figures": decision.figures}), flush=True)
    return {"promote": ExitCode.OK, "rollback": ExitCode.ROLLED_BACK}.get(decision.action, ExitCode.WAIT)


def outcome_line(action: str, dry_run: bool) -> str:
    """One line saying what ``decide`` did (or, with ``--dry-run``, would do) and what to commit."""
    if action == "wait":
        return f"canary: not enough evidence yet; nothing changed (exit {ExitCode.WAIT:d}: run decide again later)"
    done = {"promote": "promote the challenger to champion", "rollback": "roll the challenger back"}[action]
    if dry_run:
        return f"canary (dry run): would {done}; nothing changed"
    return f"canary: did {done}. Commit it: git add deployments && git commit -m 'canary {action}'"
