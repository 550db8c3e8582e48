"""Which version a rollback returns to: ``rollback.choose_target`` over the deployment history.

Pure logic on history entries (the shape ``records.entry`` writes), no files, no MLflow.
"""

from __future__ import annotations

import logging

import pytest

from mlops_template.ops import records
from mlops_template.ops.rollback import RollbackError, choose_target

NAME = "adult-income"


def step(action: str, to_version: str, from_version: str | None = None, model_name: str = NAME) -> dict:
    """One history entry, as ``records.entry`` shapes it (time and actor left out)."""
    return {"action": action, "model_name": model_name, "from_version": from_version,
            "to_version": to_version, "why": "test"}


def promotions(*versions: str) -> list[dict]:
    """Each version promoted in turn, each from the one before."""
    return [step("promote", v, versions[i - 1] if i else None) for i, v in enumerate(versions)]


def test_no_history_has_nothing_to_return_to():
    with pytest.raises(RollbackError, match=r"no earlier champion of adult-income .*pass --to VERSION"):
        choose_target([], NAME, None, None)


def test_one_champion_has_nothing_to_return_to():
    with pytest.raises(RollbackError, match="no earlier champion"):
        choose_target(promotions("1"), NAME, "1", None)


def test_the_champion_before_the_current_one():
    assert choose_target(promotions("1", "2", "3"), NAME, "3", None) == "2"


def test_a_rolled_back_version_is_skipped_and_a_second_rollback_goes_further_back():
    history = [*promotions("1", "2", "3"), step("rollback", "2", "3")]
    assert records.champion_stack(history, NAME) == ["1", "2"]
    assert choose_target(history, NAME, "2", None) == "1"  # not 3, the version rolled back from
    history.append(step("rollback", "1", "2"))
    with pytest.raises(RollbackError, match="no earlier champion"):
        choose_target(history, NAME, "1", None)


def test_a_version_promoted_again_after_its_rollback_counts_once():
    history = [*promotions("1", "2"), step("rollback", "1", "2"), step("promote", "2", "1")]
    assert records.champion_stack(history, NAME) == ["1", "2"]
    assert choose_target(history, NAME, "2", None) == "1"


def test_canary_promotions_count_and_other_actions_and_models_do_not():
    history = [
        step("promote", "1"),
        step("reject", "2", "1"),                      # the gate said no: never champion
        step("canary_start", "3", "1"),                # a challenger, never champion...
        step("canary_rollback", "3", "1"),             # ...rolled back (to_version: the challenger)
        step("promote", "7", None, model_name="other-model"),
        step("canary_start", "4", "1"),
        step("canary_promote", "4", "1"),              # a challenger that took over
    ]
    assert records.champion_stack(history, NAME) == ["1", "4"]
    assert choose_target(history, NAME, "4", None) == "1"


def test_an_explicit_version_wins_even_when_the_history_does_not_know_it():
    """``--to`` is taken as given (a version may predate the history); what is known of its
    deployment is checked next, and a version nobody deployed is refused there, naming it."""
    assert choose_target([], NAME, None, "7") == "7"
    assert choose_target(promotions("1", "2"), NAME, "2", 7) == "7"
    with pytest.raises(records.RecordError, match="v7 is not in the history or the MLflow registry"):
        records.deployment_of(promotions("1", "2"), None, NAME, "7")


def test_a_champion_record_that_disagrees_with_the_history_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="mlops_template.ops.rollback"):
        assert choose_target(promotions("1", "2", "3"), NAME, "2", None) == "2"
    assert "history says v3 is champion, champion.json says v2" in caplog.text
