"""Routing file, deployment history, the retrain lock and the retrain commit message."""

from __future__ import annotations

import json
import logging

import pytest

from mlops_template.ops import records
from mlops_template.ops.process import try_lock
from mlops_template.ops.retrain import commit_message
from mlops_template.serving import routing


def test_routing_round_trip_is_atomic(tmp_path):
    path = tmp_path / "routing.json"
    doc = routing.champion_only("m", "m:abc", "3", 0.1)
    routing.write_routing(path, doc)
    assert routing.read_routing(path) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["routing.json"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("updated_at"), "exactly the keys"),
    (lambda d: d.update(champion={"model_tag": "no-version", "model_version": "1"}), "BentoML tag"),
    (lambda d: d.update(champion={"model_tag": "m:a", "model_version": 1}), "model_version"),
    (lambda d: d.update(challenger={"model_tag": "m:b"}), "challenger"),
    (lambda d: d.update(canary_share=1.5), "canary_share"),
    (lambda d: d.update(updated_at="yesterday"), "ISO 8601"),
])
def test_invalid_routing_is_refused_and_not_written(tmp_path, change, message):
    doc = routing.champion_only("m", "m:abc", "3", 0.1)
    change(doc)
    with pytest.raises(routing.RoutingError, match=message):
        routing.write_routing(tmp_path / "routing.json", doc)
    assert not list(tmp_path.iterdir())


def test_routing_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTING_FILE", str(tmp_path / "r.json"))
    assert routing.routing_path() == tmp_path / "r.json"
    monkeypatch.delenv("ROUTING_FILE")
    assert routing.routing_path().parts[-2:] == ("deployments", "routing.json")


def test_actor_precedence(monkeypatch):
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada")
    monkeypatch.setenv("CI", "true")
    assert records.actor() == "Ada"
    monkeypatch.delenv("GIT_AUTHOR_NAME")
    assert records.actor() == "ci"
    monkeypatch.delenv("CI")
    monkeypatch.setenv("USER", "bob")
    assert records.actor() == "bob"


def test_actor_falls_back_to_git_user_name(monkeypatch, tmp_path):
    for name in ("GIT_AUTHOR_NAME", "CI", "USER", "LOGNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gitconfig").write_text("[user]\n\tname = Grace Hopper\n", encoding="utf-8")
    assert records.actor() == "Grace Hopper"
    (tmp_path / "gitconfig").write_text("", encoding="utf-8")
    assert records.actor() == "unknown"


def test_history_appends_and_reads_back(tmp_path):
    path = tmp_path / "history.jsonl"
    first = records.entry("promote", "m", None, "1", "blessed", model_tag="m:a")
    records.append(first, path)
    records.append(records.entry("reject", "m", "1", "2", "worse"), path)
    entries = records.read(path)
    assert [e["action"] for e in entries] == ["promote", "reject"]
    assert entries[0] == first and set(first) >= {"at", "action", "model_name", "from_version",
                                                  "to_version", "who", "why"}
    with pytest.raises(ValueError):
        records.entry("delete", "m", None, "1", "")


def log(*steps: tuple[str, str | None, str]) -> list[dict]:
    return [records.entry(action, "m", before, after, "", model_tag=f"m:{after}")
            for action, before, after in steps]


def test_champion_stack_pops_rolled_back_versions():
    entries = log(("promote", None, "1"), ("reject", "1", "2"), ("promote", "1", "3"), ("promote", "3", "4"))
    assert records.champion_stack(entries, "m") == ["1", "3", "4"]
    entries += log(("rollback", "4", "3"))
    assert records.champion_stack(entries, "m") == ["1", "3"]
    entries += log(("rollback", "3", "1"))
    assert records.champion_stack(entries, "m") == ["1"]
    assert records.champion_stack(entries, "other") == []


def test_rolled_back_until_it_is_champion_again():
    entries = log(("promote", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1"))
    assert records.rolled_back(entries, "m", "2")["action"] == "rollback"
    assert records.rolled_back(entries, "m", "1") is None
    entries += log(("rollback", "1", "2"))
    assert records.rolled_back(entries, "m", "2") is None
    assert records.promotion_of(entries, "m", "2")["model_tag"] == "m:2"
    assert records.promotion_of(entries, "m", "9") is None


def test_the_retrain_lock_is_exclusive(tmp_path):
    first = try_lock(tmp_path / "lock")
    assert first is not None
    assert try_lock(tmp_path / "lock") is None
    first.close()
    again = try_lock(tmp_path / "lock")
    assert again is not None
    again.close()


def test_commit_message_names_version_decision_and_score():
    result = {"model_name": "m", "candidate_version": "5", "promoted": True, "roc_auc": 0.92712,
              "champion_version": "5"}
    assert commit_message(result) == "retrain: m v5 promoted (roc_auc 0.927)"
    result.update(promoted=False, champion_version="4")
    assert commit_message(result) == "retrain: m v5 not promoted, champion v4 kept (roc_auc 0.927)"


def test_a_history_torn_by_a_crash_mid_append_keeps_every_complete_entry(tmp_path, caplog):
    path = tmp_path / "history.jsonl"
    complete = [records.entry("promote", "m", None, "1", "ok", model_tag="m:1"),
                records.entry("promote", "m", "1", "2", "ok", model_tag="m:2")]
    for item in complete:
        records.append(item, path)
    line = json.dumps(records.entry("rollback", "m", "2", "1", "cut short")) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line[: len(line) // 2])  # the process died here
    with caplog.at_level(logging.WARNING, logger="mlops_template.ops.records"):
        assert records.read(path) == complete
    assert "incomplete line" in caplog.text and "2 complete entries are kept" in caplog.text
    after = records.entry("promote", "m", "2", "3", "next run", model_tag="m:3")
    records.append(after, path)  # starts on a line of its own: the torn line damages nothing else
    assert records.read(path) == [*complete, after]
    assert records.champion_stack(records.read(path), "m") == ["1", "2", "3"]


def test_an_entry_appended_right_after_torn_text_by_an_older_version_is_recovered(tmp_path, caplog):
    path = tmp_path / "history.jsonl"
    first, second = (records.entry("promote", "m", None, "1", "ok"), records.entry("promote", "m", "1", "2", "ok"))
    path.write_text(json.dumps(first) + "\n" + '{"at": "2026-12-01T00:00:00+00:00", "act'
                    + json.dumps(second) + "\n" + "not json at all\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mlops_template.ops.records"):
        assert records.read(path) == [first, second]
    assert "line 3 is not a history entry" in caplog.text
