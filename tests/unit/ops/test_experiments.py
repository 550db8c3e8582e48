"""The experiments table: readable in 80 columns, and never hiding a changed param."""

from mlops_template.ops.experiments import changed_params, experiment_rows, table

GATE = {"metrics/evaluation.json": {"data": {"roc_auc": 0.91, "log_loss": 0.3, "value_per_row": 12.5}},
        "metrics/gate.json": {"data": {"blessed": True}}}


def _shown(experiment_params: dict) -> list[dict]:
    """``dvc exp show --json`` for a workspace, its commit and one experiment of that commit."""
    base = {"train": {"estimator": "hist_gradient_boosting", "seed": 42,
                      "hyperparameters": {"hist_gradient_boosting": {"learning_rate": 0.1, "max_iter": 200}}},
            "gate": {"change_thresholds": {"roc_auc": {"absolute": -0.01}}}}
    entry = {"params": {"params.yaml": {"data": base}}, "metrics": GATE}
    changed = {"params": {"params.yaml": {"data": experiment_params}}, "metrics": GATE}
    return [{"rev": "workspace", "data": entry},
            {"rev": "0123456789abcdef", "name": "main", "data": entry,
             "experiments": [{"revs": [{"rev": "fedcba", "name": "lusty-gnat", "data": changed}]}]}]


def test_changed_params_name_only_what_differs_from_the_baseline():
    rows = experiment_rows(_shown({"train": {"estimator": "random_forest", "seed": 42,
                                             "hyperparameters": {"hist_gradient_boosting": {
                                                 "learning_rate": 0.1, "max_iter": 200}}},
                                   "gate": {"change_thresholds": {"roc_auc": {"absolute": -0.01}}}}))
    workspace, commit, experiment = rows
    assert changed_params(experiment) == "estimator=random_forest"
    assert changed_params(workspace) == changed_params(commit) == ""


def test_a_long_list_of_changes_wraps_instead_of_being_cut():
    many = {"train": {"estimator": "random_forest_with_a_long_name", "seed": 7,
                      "hyperparameters": {"hist_gradient_boosting": {"learning_rate": 0.05, "max_iter": 900}}},
            "gate": {"change_thresholds": {"roc_auc": {"absolute": -1.0}}}}
    text = table(experiment_rows(_shown(many)))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text
    joined = " ".join(text.split())  # wrapped at spaces only: every key=value stays whole
    for part in ("estimator=random_forest_with_a_long_name", "seed=7", "learning_rate=0.05", "max_iter=900",
                 "absolute=-1.0"):
        assert part in joined, text
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("lusty-gnat"))
    assert lines[start].endswith("↓") and lines[start + 1].startswith("    "), text  # continued below
