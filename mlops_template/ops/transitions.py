"""Deployment transitions: the one place that changes what serves.

The deploy stage (:mod:`~mlops_template.ops.promotion`), ``canary``, ``rollback`` and
``experiments promote`` decide; the functions here carry the decision out:

- :func:`make_champion`: a candidate becomes the champion (deploy, ``deploy.strategy: direct``);
- :func:`start_challenger`: a registered version starts serving a share of requests (a canary);
- :func:`end_challenger`: the challenger is promoted to champion or rolled back;
- :func:`roll_back_champion`: an earlier champion serves again;
- :func:`publish_archive`: ``models/serving/champion.bento`` becomes a deployment's archive.

Every transition runs under the transition lease (:mod:`mlops_template.ops.lease`), against the
routing document as :func:`read_serving` read it under that lease, and does its steps in this
fixed order (:data:`STEPS`):

1. ``archive``: the champion's archive is published (``models/serving/champion.bento``, what
   ``docker build`` takes);
2. ``registry``: the MLflow aliases ``champion``/``challenger`` move;
3. ``records``: ``deployments/champion.json`` is rewritten and one line appended to
   ``deployments/history.jsonl`` (and written as tags on the model version);
4. ``routing``: the routing document, which every replica follows, is written LAST, and only if
   it is still the version read under the lease (an ETag ``If-Match`` in the store, the file's
   sha256 on one machine); otherwise :class:`~mlops_template.serving.routing.RoutingConflict`
   and nothing is overwritten. In team mode the write first publishes the models the document
   names to the store, so no replica reads a document naming a model it cannot fetch.

Then, for a challenger rolled back, its archive is removed. Serving changes only once everything
the change implies is recorded: a failure or a refused write before step 4 leaves serving as it
was, with the records ahead of it; running the same command again completes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.io import sha256_of, utc_now
from mlops_template.ops import lease, records
from mlops_template.serving import routing

STEPS = ("archive", "registry", "records", "routing")

logger = logging.getLogger(__name__)

OnStep = Callable[[str], None]


class TransitionError(RuntimeError):
    """A transition was asked for something the current state does not allow."""


@dataclass(frozen=True)
class Serving:
    """The routing document as read under the lease (None before the first deploy) and its version."""

    location: str | Path
    document: dict[str, Any] | None
    version: str | None


def read_serving(verify: bool = True) -> Serving:
    """What serves now, read for a transition; ``verify``: the document must carry the deploy key's
    signature when one is configured (a writer never builds on someone else's document).

    The version is read first: if the document changes after it, the transition's routing write
    is refused rather than built on a document newer than its version.
    """
    location = routing.routing_location()
    document, version = routing.read_versioned(location)
    if document is not None and verify:
        document = routing.read_for_update(location)
    return Serving(location, document, version)


def _require_lease() -> None:
    if not os.environ.get(lease.OWNER_ENV_VAR):
        raise TransitionError("a deployment transition must run under the transition lease (ops.lease.acquire)")


def _noop(step: str) -> None:
    """The default ``on_step``: nothing to time or check between steps."""


def _write_routing(serving: Serving, document: dict[str, Any], on_step: OnStep) -> None:
    """Step 4: the routing document, only if still at the version read."""
    on_step("routing")
    routing.write_routing(serving.location, document, expected=serving.version)


def publish_archive(deployment: dict[str, Any]) -> dict[str, Any]:
    """Make ``models/serving/champion.bento`` the archive of ``deployment``; its updated record.

    A challenger's archive is moved into place; any other deployment's bento is exported again
    from the BentoML store (deploy never deletes bentos). ``docker build`` takes that file.
    """
    target = paths.CHAMPION_ARCHIVE
    source = Path(deployment["archive"]) if deployment.get("archive") else None
    expected = deployment.get("archive_sha256")
    if source is not None and source.exists() and expected and sha256_of(source) == expected:
        if source.resolve() != target.resolve():
            os.replace(source, target)
    elif deployment.get("bento_tag"):
        from mlops_template.core.config import project_root

        os.environ.setdefault("BENTOML_HOME", str(project_root() / ".bentoml"))
        from mlops_template.pipeline.packaging import export_archive

        export_archive(deployment["bento_tag"], target)
    else:
        logger.warning("no bento recorded for %s v%s: %s not updated", deployment.get("model_name"),
                       deployment.get("model_version"), target)
        return {**deployment, "archive": None, "archive_sha256": None}
    return {**deployment, "archive": str(target), "archive_sha256": sha256_of(target)}


def make_champion(serving: Serving, deployed: dict[str, Any], before: str | None, mlflow_config: dict[str, Any],
                  reasons: list[str], canary_share: float, decision_fields: dict[str, Any],
                  on_step: OnStep = _noop) -> dict[str, Any]:
    """A packaged candidate (``deployed``: its deployment record, archive already exported to
    ``models/serving/champion.bento``) replaces champion ``before``; the history entry."""
    from mlops_template.pipeline import tracking

    _require_lease()
    name, version = deployed["model_name"], str(deployed["model_version"])
    on_step("archive")  # packaging exported it
    on_step("registry")
    tracking.set_champion(mlflow_config, name, version,
                          {"bento_tag": deployed["bento_tag"], "promoted_at": deployed["deployed_at"]})
    on_step("records")
    records.write_record(records.decision("promote", before, version, reasons, **decision_fields),
                         champion=deployed, challenger=None)
    item = records.record(records.entry("promote", name, before, version, "; ".join(reasons),
                                        model_tag=deployed["model_tag"], bento_tag=deployed["bento_tag"],
                                        champion=deployed), mlflow_config)
    _write_routing(serving, routing.champion_only(name, deployed["model_tag"], version, canary_share,
                                                  deployed["sha256"]), on_step)
    return item


def start_challenger(serving: Serving, model_name: str, version: str, model_tag: str, model_sha256: str | None,
                     share: float, why: str, mlflow_config: dict[str, Any],
                     challenger: dict[str, Any] | None = None, decision: dict[str, Any] | None = None,
                     on_step: OnStep = _noop) -> dict[str, Any]:
    """``version`` starts serving ``share`` of the requests beside the champion; the history entry.

    ``challenger``/``decision``: its deployment record and the decision that packaged it, written to
    ``deployments/champion.json`` (the deploy stage's canary); a manual start records the history only.
    """
    from mlops_template.pipeline import tracking

    _require_lease()
    if serving.document is None:
        raise TransitionError(f"no routing document at {serving.location}: deploy a champion first")
    current = serving.document
    if current["champion"]["model_version"] == str(version):
        raise TransitionError(f"v{version} already is the champion")
    on_step("archive")  # a challenger serves from the BentoML store; packaging exported its archive
    on_step("registry")
    tracking.set_challenger(mlflow_config, model_name, str(version))
    on_step("records")
    if decision is not None:
        records.write_record(decision, challenger=challenger)
    item = records.record(records.entry("canary_start", model_name, current["champion"]["model_version"], version,
                                        why, model_tag=model_tag, canary_share=float(share)), mlflow_config)
    _write_routing(serving, {**current, "challenger": routing.slot(model_tag, str(version), model_sha256),
                             "canary_share": float(share), "updated_at": utc_now()}, on_step)
    return item


def end_challenger(serving: Serving, action: str, challenger_deployment: dict[str, Any] | None,
                   reasons: list[str], figures: dict[str, Any], mlflow_config: dict[str, Any],
                   on_step: OnStep = _noop) -> dict[str, Any]:
    """Promote (``action="promote"``, with the challenger's full deployment record) or roll back
    (``"rollback"``) the running challenger; the history entry."""
    from mlops_template.pipeline import tracking

    _require_lease()
    if action not in ("promote", "rollback"):
        raise ValueError(f"action must be 'promote' or 'rollback', got {action!r}")
    document = serving.document
    if document is None or document["challenger"] is None:
        raise TransitionError("no canary is running: the routing file has no challenger")
    name, champion, challenger = document["model_name"], document["champion"], document["challenger"]
    why = "; ".join(reasons)
    on_step("archive")
    if action == "promote":
        if challenger_deployment is None:
            raise ValueError("promoting a challenger needs its deployment record")
        promoted = {**publish_archive(challenger_deployment), "deployed_at": utc_now()}
    on_step("registry")
    if action == "promote":
        tracking.set_champion(mlflow_config, name, challenger["model_version"],
                              {"promoted_at": promoted["deployed_at"], "promoted_by": "canary"})
    tracking.set_challenger(mlflow_config, name, None)
    on_step("records")
    if action == "promote":
        item = records.entry("canary_promote", name, champion["model_version"], challenger["model_version"], why,
                             model_tag=challenger["model_tag"], bento_tag=promoted["bento_tag"], champion=promoted,
                             figures=figures)
        slots: dict[str, Any] = {"champion": promoted, "challenger": None}
        after = {**document, "champion": challenger, "challenger": None, "updated_at": utc_now()}
    else:
        item = records.entry("canary_rollback", name, champion["model_version"], challenger["model_version"], why,
                             model_tag=challenger["model_tag"], figures=figures)
        slots = {"challenger": None}
        after = {**document, "challenger": None, "updated_at": utc_now()}
    records.write_record(records.decision(item["action"], item["from_version"], item["to_version"], reasons),
                         **slots)
    records.record(item, mlflow_config)
    _write_routing(serving, after, on_step)
    if action == "rollback":
        paths.CHALLENGER_ARCHIVE.unlink(missing_ok=True)
    return item


def roll_back_champion(serving: Serving, restored: dict[str, Any], from_version: str | None, reason: str,
                       canary_share: float, mlflow_config: dict[str, Any], on_step: OnStep = _noop) -> dict[str, Any]:
    """An earlier champion (``restored``: its full deployment record) serves again; the history entry."""
    from mlops_template.pipeline import tracking

    _require_lease()
    name, target = restored["model_name"], str(restored["model_version"])
    on_step("archive")
    restored = {**publish_archive(restored), "deployed_at": utc_now()}
    on_step("registry")
    item = records.entry("rollback", name, from_version, target, reason, model_tag=restored["model_tag"])
    tracking.set_champion(mlflow_config, name, target, {"restored_at": item["at"]})
    on_step("records")
    records.write_record(records.decision("rollback", from_version, target, [reason]), champion=restored,
                         challenger=None)
    records.record(item, mlflow_config)
    _write_routing(serving, routing.champion_only(name, restored["model_tag"], target, canary_share,
                                                  restored.get("sha256")), on_step)
    return item
