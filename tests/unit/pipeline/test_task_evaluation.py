"""The evaluate stage on every task: metrics and value, baseline, the gate, slices and plots, with real models.

Models are fitted on sklearn's bundled public datasets (tests/support/fitted_tasks.py); the gate is
the one onboarding writes for the task (:meth:`Task.gate_thresholds`, binary's params.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlops_template.core.params import EvaluateSection, GateSection, load
from mlops_template.pipeline import comparison
from mlops_template.pipeline import evaluation as ev
from mlops_template.pipeline.assessment import judge
from mlops_template.pipeline.gate import GateConfigError
from mlops_template.pipeline.plots import PLOT_NAMES
from mlops_template.pipeline.scoring import ModelCardError, scoring_for
from tests.support.fitted_tasks import REGIONS, TASK_NAMES, dataset, fit

OWN_PLOTS = {"binary": {"roc", "precision_recall", "calibration", "confusion"},
             "multiclass": {"confusion", "calibration_by_class"},
             "regression": {"predicted_actual", "residuals"}}


def gate_for(task) -> GateSection:
    """The gate a project of ``task`` starts with: binary's params.yaml, else what onboarding writes."""
    if task.name == "binary":
        return load().gate
    metric = next(iter(comparison.SLICE_METRICS[task.name]))
    return GateSection.parse({**task.gate_thresholds(), "slices": {"metric": metric}})


def evaluate(fitted, cfg: dict | None = None, gate: GateSection | None = None, **kwargs):
    cfg = EvaluateSection.parse(cfg or {"slices": ["region"], "min_slice_rows": 10})
    return judge(cfg, gate or gate_for(fitted.data.task), fitted.data.contract, fitted.card, fitted.test,
                 fitted.predict, fitted.spec.source_columns, **kwargs)


@pytest.fixture(scope="module", params=TASK_NAMES)
def good(request):
    return fit(dataset(request.param))


@pytest.fixture(scope="module")
def judged(good):
    """The evaluation of ``good`` with slices by region (computed once per task: importance takes a while)."""
    return evaluate(good)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_a_real_model_is_blessed_over_its_baseline_and_a_shuffled_label_fit_is_refused(task):
    data = dataset(task)
    primary = data.task.primary_metric
    good, bad = evaluate(fit(data)), evaluate(fit(data, shuffle_labels=True))

    assert good.blessed, good.reasons
    assert good.metrics["task"] == task and primary in good.metrics and "value_per_row" in good.metrics
    baseline = good.gate["baseline"]["metrics"]
    better = 1 if data.task.primary_direction == "higher_is_better" else -1
    assert better * (good.metrics[primary] - baseline[primary]) > 0
    assert not bad.blessed
    failed = [c for c in bad.gate["checks"] if c["passed"] is False]
    assert any(c["kind"] == "baseline" for c in failed), bad.reasons
    json.dumps([good.metrics, good.gate, good.slices, good.plots, good.importance], allow_nan=False)


def test_the_baseline_predicts_from_the_model_card_not_from_the_test_labels(good, judged):
    task, target = good.data.task, good.data.contract.target
    labels = task.encode(good.test[target])
    summary = good.card["training_data"]["target"]
    assert task.target_summary(labels) != summary  # the test rows' own figures differ from training's
    cfg = EvaluateSection.parse({"slices": ["region"], "min_slice_rows": 10})
    baseline = judged.gate["baseline"]["metrics"]
    if task.name == "binary":
        assert baseline == ev.baseline_metrics(labels, summary["positive_share"], cfg.value_matrix)
    else:
        know_nothing = task.baseline_output(summary, len(labels))
        assert baseline == scoring_for(task, cfg, summary).score(labels, know_nothing)
    with pytest.raises(ModelCardError, match="training_data.target"):
        judge(cfg, gate_for(task), good.data.contract, {**good.card, "training_data": {}}, good.test, good.predict,
              good.spec.source_columns)


def test_a_gate_naming_metrics_the_task_lacks_stops_before_the_champion_is_loaded():
    fitted = fit(dataset("regression"))
    calls = []
    binary_gate = load().gate  # roc_auc and log_loss: a binary project's gate carried over
    with pytest.raises(GateConfigError) as caught:
        evaluate(fitted, gate=binary_gate, load_champion=lambda: calls.append(1))
    message = str(caught.value)
    assert "gate.baseline_thresholds.roc_auc" in message and "gate.change_thresholds.roc_auc" in message
    assert "regression" in message and "rmse" in message and calls == []
    slices_only = GateSection.parse({**fitted.data.task.gate_thresholds(), "slices": {"metric": "soft_recall"}})
    with pytest.raises(GateConfigError, match="neg_abs_error"):
        evaluate(fitted, gate=slices_only)


def test_regression_value_is_minus_the_cost_of_over_and_under_prediction():
    fitted = fit(dataset("regression"))
    labels = fitted.data.task.encode(fitted.test["progression"])
    predicted = fitted.predict(fitted.test)
    over, under = 3.0, 0.5
    expected = -sum(over * (p - y) if p > y else under * (y - p) for p, y in zip(predicted, labels, strict=True))
    cfg = EvaluateSection.parse({"costs": {"over": over, "under": under}})
    scored = scoring_for(fitted.data.task, cfg, fitted.card["training_data"]["target"]).score(labels, predicted)
    assert scored["value_total"] == pytest.approx(expected, abs=1e-3)
    assert scored["value_per_row"] == pytest.approx(expected / len(labels), abs=1e-5)
    plain = scoring_for(fitted.data.task, EvaluateSection.parse({}), fitted.card["training_data"]["target"])
    assert plain.score(labels, predicted)["value_per_row"] == pytest.approx(-scored["mae"], abs=1e-5)


def test_multiclass_value_is_accuracy_without_class_values_and_the_table_with_them():
    fitted = fit(dataset("multiclass"))
    task = fitted.data.task
    labels, proba = task.encode(fitted.test["cultivar"]), fitted.predict(fitted.test)
    summary = fitted.card["training_data"]["target"]
    plain = scoring_for(task, EvaluateSection.parse({}), summary).score(labels, proba)
    assert plain["value_per_row"] == plain["accuracy"] and plain["threshold"] is None
    table = {a: {p: (2.0 if a == p else -1.0 if a == "barolo" else 0.0) for p in task.classes} for a in task.classes}
    values = np.array([[table[a][p] for p in task.classes] for a in task.classes])
    answered = (proba @ values).argmax(axis=1)  # the class of highest expected value, as the service answers
    expected = sum(table[task.classes[a]][task.classes[p]] for a, p in zip(labels, answered, strict=True))
    valued = scoring_for(task, EvaluateSection.parse({"class_values": table}), summary).score(labels, proba)
    assert valued["value_total"] == pytest.approx(expected)
    assert valued["decision_values"] == values.tolist()
    del table["barbera"]["barolo"]
    with pytest.raises(ValueError, match="barbera->barolo"):
        scoring_for(task, EvaluateSection.parse({"class_values": table}), summary).score(labels, proba)


def test_slices_hold_the_task_metrics_per_value_and_small_ones_are_marked(good, judged):
    regions = judged.slices["region"]
    assert set(regions) == set(REGIONS)
    primary = good.data.task.primary_metric
    for key, figures in regions.items():
        assert figures["n"] == int((good.test["region"] == key).sum())
        assert primary in figures and not any(isinstance(v, dict) for v in figures.values())
    scoring = scoring_for(good.data.task, EvaluateSection.parse({}), good.card["training_data"]["target"])
    labels = good.data.task.encode(good.test[good.data.contract.target])
    small = scoring.slices(good.test, labels, good.predict(good.test), judged.metrics["threshold"], ["region"],
                           10_000)["region"]
    assert all(v["too_small"] for v in small.values())


def test_every_task_writes_every_plot_finite_and_only_its_own_filled(good, judged):
    plots = judged.plots
    assert set(plots) == set(PLOT_NAMES)
    ev.assert_finite(plots)
    json.dumps(plots, allow_nan=False)
    task = good.data.task
    assert {name for name, rows in plots.items() if rows} == OWN_PLOTS[task.name]
    n = len(good.test)
    if task.name == "regression":
        assert len(plots["predicted_actual"]) == n
        actual = task.encode(good.test["progression"])
        assert [r["actual"] for r in plots["predicted_actual"]] == pytest.approx(actual, abs=1e-6)
        assert all(abs(r["residual"] - (a - r["predicted"])) < 1e-5
                   for r, a in zip(plots["residuals"], actual, strict=True))
    if task.name == "multiclass":
        k = len(task.classes)   # every cell once, zeros too, whatever the number of rows
        assert len(plots["confusion"]) == k * k and sum(r["count"] for r in plots["confusion"]) == n
        assert {(r["actual"], r["predicted"]) for r in plots["confusion"]} == {
            (a, b) for a in task.classes for b in task.classes}
        right = sum(r["count"] for r in plots["confusion"] if r["actual"] == r["predicted"])
        assert right / n == pytest.approx(judged.metrics["accuracy"], abs=1e-6)
        assert {r["class"] for r in plots["calibration_by_class"]} == set(task.classes)
        assert sum(r["count"] for r in plots["calibration_by_class"]) == n * len(task.classes)


def test_dvc_yaml_declares_every_plot_file_importance_and_the_templates_it_names():
    """Every task writes every plot file: each must be an output of evaluate (else `dvc repro` finds an
    undeclared file, or a declared one missing); importance.json is an output of evaluate and a dep of deploy."""
    import yaml

    repo = Path(__file__).resolve().parents[3]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    plots = {next(iter(p)): next(iter(p.values())) for p in stages["evaluate"]["plots"]}
    assert set(plots) == {f"metrics/plots/{name}.json" for name in PLOT_NAMES}
    builtin = {"simple", "linear", "scatter", "confusion", "confusion_normalized", "smooth", "bar_horizontal",
               "bar_horizontal_sorted", "scatter_jitter"}
    for spec in plots.values():
        assert spec["template"] in builtin or (repo / ".dvc/plots" / f"{spec['template']}.json").is_file()
    assert any("metrics/importance.json" in o for o in stages["evaluate"]["outs"])
    assert "metrics/importance.json" in stages["deploy"]["deps"]


def test_a_champion_of_another_task_is_unscorable_not_a_crash():
    """After a contract changes task, the registry's champion answers in the old shape: refused by name."""
    from mlops_template.pipeline.assessment import ChampionUnscorable

    regression, multiclass = fit(dataset("regression")), fit(dataset("multiclass"))
    old = (lambda frame: np.tile(multiclass.predict(multiclass.test[:1]), (len(frame), 1)),
           {"model_version": "7", "mlflow_run_id": "r7", "sha256": "x", "threshold": None})
    with pytest.raises(ChampionUnscorable, match="champion v7 cannot be scored as a regression model"):
        evaluate(regression, load_champion=lambda: old)


def test_multiclass_answers_by_expected_value_when_class_values_are_set():
    """A right "barolo" answer worth 20, every other right answer 1, wrong ones 0: under calibrated
    probabilities, answering by expected value beats answering the most probable class. The table
    evaluate decided by is what the package ships (``decision_values``), so the service and the batch
    scorer answer as evaluate valued."""
    from mlops_template.core.tasks import task_of

    fitted = fit(dataset("multiclass"))
    task = fitted.data.task
    summary = fitted.card["training_data"]["target"]
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(len(task.classes)), size=20000)   # calibrated by construction:
    labels = (proba.cumsum(axis=1) > rng.random((len(proba), 1))).argmax(axis=1)  # labels drawn from it
    table = {a: {p: (20.0 if a == p == "barolo" else 1.0 if a == p else 0.0) for p in task.classes}
             for a in task.classes}
    valued = scoring_for(task, EvaluateSection.parse({"class_values": table}), summary)
    result = valued.score(labels, proba)
    values = np.array(result["decision_values"])
    assert result["value_per_row"] > values[labels, proba.argmax(axis=1)].mean() + 0.1
    decided = task_of(fitted.data.contract, result["decision_values"])
    served = [a["label"] for a in decided.answers(proba)]
    assert served != [task.classes[i] for i in proba.argmax(axis=1)]
    assert [task.classes[i] for i in valued.answers(proba, None).decision] == served
