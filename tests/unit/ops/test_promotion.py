"""The deployment policy as a function, and the one shape of the deployment records."""

from __future__ import annotations

import pytest

from mlops_template.ops import records
from mlops_template.ops.promotion import Plan, nothing_deployed, plan

BLESSED = {"blessed": True, "reasons": ["blessed: all 3 applicable check(s) passed"]}
REFUSED = {"blessed": False, "reasons": ["baseline check failed: ... [gate.baseline_thresholds.log_loss]"]}


def history(*steps: tuple[str, str | None, str]) -> list[dict]:
    return [records.entry(action, "m", before, after, "why", model_tag=f"m:{after}") for action, before, after in steps]


def decide(gate=BLESSED, candidate="3", champion="2", entries=(), strategy="direct", experiment=None,
           canary_possible=True) -> Plan:
    return plan(gate, candidate, champion, list(entries), "m", strategy, experiment, canary_possible)


def test_an_experiment_run_only_records_and_says_how_to_promote():
    chosen = decide(experiment="lusty-gnat")
    assert chosen.action == "record" and not chosen.first_model
    assert "python -m mlops_template experiments promote lusty-gnat" in chosen.reasons[-1]
    assert decide(gate=REFUSED, experiment="x").action == "record"


def test_an_unblessed_experiment_is_never_offered_a_promote_command():
    chosen = decide(gate=REFUSED, experiment="lusty-gnat")
    assert chosen.action == "record"
    assert "not blessed" in chosen.reasons[-1]
    assert not any("promote" in reason for reason in chosen.reasons), chosen.reasons


def test_a_candidate_that_is_not_blessed_is_rejected_and_first_models_are_flagged():
    assert decide(gate=REFUSED) == Plan("reject", REFUSED["reasons"], False)
    first = decide(gate=REFUSED, champion=None)
    assert first.action == "reject" and first.first_model


def test_a_rolled_back_version_is_not_promoted_again():
    entries = history(("promote", None, "2"), ("promote", "2", "3"), ("rollback", "3", "2"))
    chosen = decide(entries=entries)
    assert chosen.action == "reject"
    assert "v3 was rolled back" in chosen.reasons[0] and "rollback --to 3" in chosen.reasons[0]
    promoted_again = [*entries, *history(("promote", "2", "3"))]
    assert decide(entries=promoted_again).action == "promote"


def test_direct_promotes_and_canary_starts_a_challenger_once_a_champion_serves():
    assert decide().action == "promote"
    assert decide(strategy="canary").action == "canary"
    assert decide(strategy="canary", champion=None).action == "promote"  # the first model
    assert decide(strategy="canary", canary_possible=False).action == "promote"  # no routing file yet
    with pytest.raises(ValueError, match="deploy.strategy"):
        decide(strategy="blue-green")


def test_the_nothing_deployed_message_names_the_reasons_and_what_to_change():
    text = nothing_deployed("m", "1", REFUSED["reasons"])
    assert "NOTHING DEPLOYED" in text and "gate.baseline_thresholds.log_loss" in text and "dvc repro" in text


FIELDS = dict(model_name="m", model_version="3", mlflow_run_id="r", bento_tag="svc:b", model_tag="m:t",
              archive="models/serving/champion.bento", archive_sha256="a", sha256="s", threshold=0.4,
              test_roc_auc=0.9, git_revision="g", deployed_at="2026-12-01T00:00:00+00:00")


def test_deployment_records_have_one_shape(tmp_path):
    path = tmp_path / "champion.json"
    assert records.read_record(path) == {"champion": None, "challenger": None, "last_decision": None}
    with pytest.raises(records.RecordError, match="missing"):
        records.deployment(model_name="m")
    with pytest.raises(records.RecordError, match="unknown"):
        records.deployment(**FIELDS, colour="blue")
    records.write_record(records.decision("promote", None, "3", ["ok"]), champion=FIELDS, path=path)
    challenger = {**FIELDS, "model_version": "4", "archive": "models/serving/challenger.bento"}
    records.write_record(records.decision("canary_start", "3", "4", ["ok"]), challenger=challenger, path=path)
    record = records.read_record(path)
    assert record["champion"] == FIELDS and record["challenger"] == challenger  # the champion was kept
    assert list(record["champion"]) == list(records.DEPLOYMENT_FIELDS)
    assert record["last_decision"]["action"] == "canary_start"
    partial = records.full_deployment({"model_name": "m", "model_version": "2", "model_tag": "m:x"})
    assert partial["bento_tag"] is None and list(partial) == list(records.DEPLOYMENT_FIELDS)


def test_deployment_of_a_version_comes_from_its_promotion():
    promoted = {**FIELDS, "model_version": "2"}
    entries = [records.entry("promote", "m", None, "2", "ok", model_tag="m:2", champion=promoted)]
    assert records.deployment_of(entries, None, "m", "2")["bento_tag"] == "svc:b"
    with pytest.raises(records.RecordError, match="v5"):
        records.deployment_of(entries, None, "m", "5")
