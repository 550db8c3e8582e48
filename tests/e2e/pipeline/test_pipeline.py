"""The DVC pipeline end to end, from a fresh clone: outputs, caching, reruns, failures, experiments.

One module-scoped clone runs the full ``dvc repro`` once; the tests below reuse it in file order.
Each test starts by asserting a clean ``dvc status`` and ends with one. Tests that break an input
put it back and bring the pipeline up to date again (cheap: DVC's run cache restores outputs of
inputs it has seen). Two changes are kept on purpose, as a user would keep them: the parameter
test leaves a smaller ``max_iter`` (so later retrains are fast) and ``dvc exp run`` leaves its
applied experiment in the workspace. No test depends on the parameter values it finds.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from mlops_template.core.exitcodes import ExitCode
from tests.support.clones import STAGES, Clone, running_stages, strict_json

# Outputs of every stage downstream of validate: a failed validate must leave them untouched.
DOWNSTREAM = (
    "data/features/train.parquet",
    "data/features/test.parquet",
    "models/candidate/model.skops",
    "models/candidate/model_card.json",
    "metrics/evaluation.json",
    "metrics/gate.json",
    "deployments/champion.json",
    "dvc.lock",
)


@pytest.fixture(scope="module")
def repo(make_clone) -> Clone:
    clone = make_clone("pipeline")
    proc = clone.dvc("repro")
    clone.first_repro = proc  # kept for the test that checks which stages ran
    return clone


def declared_outputs(repo: Clone) -> list[str]:
    """Every outs / metrics / plots path of dvc.yaml, with ${...} resolved from params.yaml."""
    dvc_yaml = yaml.safe_load((repo.path / "dvc.yaml").read_text(encoding="utf-8"))
    params = repo.params()

    def resolve(text: str) -> str:
        def lookup(match):
            value = params
            for key in match.group(1).split("."):
                value = value[key]
            return str(value)
        return re.sub(r"\$\{([^}]+)\}", lookup, text)

    paths = []
    for stage in dvc_yaml["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                paths.append(resolve(path))
    return paths


def run_repro_expecting_failure(repo: Clone):
    proc = repo.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"dvc repro should have failed:\n{output[-4000:]}"
    return output


# --- a full run -------------------------------------------------------------------------------

def test_full_run_runs_every_stage_in_order(repo):
    assert running_stages(repo.first_repro.stdout) == list(STAGES), repo.first_repro.stdout[-3000:]


def test_full_run_produces_every_declared_output(repo):
    paths = declared_outputs(repo)
    assert len(paths) >= 15
    missing = [p for p in paths if not (repo.path / p).exists()]
    assert not missing, f"declared outputs missing after dvc repro: {missing}"
    for p in paths:
        target = repo.path / p
        if target.is_file():
            assert target.stat().st_size > 0, f"{p} is empty"
        else:
            assert any(target.iterdir()), f"{p} is an empty folder"
    repo.assert_up_to_date()


def test_full_run_metrics_gate_and_champion(repo):
    validation = repo.json("metrics/validation.json")
    assert validation["rows_in"] == 32561 and validation["rows_rejected"] == 183

    evaluation = repo.json("metrics/evaluation.json")
    assert evaluation["roc_auc"] >= 0.90, evaluation
    assert 0.0 < evaluation["threshold"] < 1.0

    gate = repo.json("metrics/gate.json")
    assert gate["blessed"] is True, gate

    params = repo.params()["deploy"]
    card = repo.json("models/candidate/model_card.json")
    champion = repo.json("deployments/champion.json")["champion"]
    assert champion["model_name"] == params["model_name"]
    assert champion["model_version"] == card["mlflow"]["model_version"], (champion, card["mlflow"])
    assert re.fullmatch(rf"{params['service_name']}:\w+", champion["bento_tag"]), champion
    assert champion["model_tag"].startswith(f"{params['model_name']}:")

    archive = repo.path / champion["archive"]
    assert archive.is_file(), champion
    assert archive.parent == repo.path / "models" / "serving"
    assert tarfile.is_tarfile(archive)
    # The bento and model really are in the clone's own BentoML store.
    bento_name, bento_version = champion["bento_tag"].split(":")
    assert (repo.path / ".bentoml" / "bentos" / bento_name / bento_version).is_dir()


def test_plots_render_without_nan(repo):
    proc = repo.dvc("plots", "show", "--json")
    shown = strict_json(proc.stdout)
    rendered = shown["data"] if "data" in shown else shown
    dvc_yaml = yaml.safe_load((repo.path / "dvc.yaml").read_text(encoding="utf-8"))
    declared = [next(iter(p)) if isinstance(p, dict) else p
                for stage in dvc_yaml["stages"].values() for p in stage.get("plots", [])]
    assert set(declared) <= set(rendered), (declared, list(rendered))
    # dvc.yaml declares every task's plots; evaluate fills the task's own (binary here), the others hold [].
    filled = [name for name in declared if strict_json((repo.path / name).read_text(encoding="utf-8"))]
    assert sorted(Path(name).stem for name in filled) == ["calibration", "confusion", "precision_recall", "roc"]
    for name in filled:
        (plot,) = rendered[name]
        values = plot["content"]["data"]["values"]
        assert values, f"{name} renders no points"
    for path in sorted((repo.path / "metrics").rglob("*.json")):
        strict_json(path.read_text(encoding="utf-8"))  # raises on NaN / Infinity


def test_second_repro_is_a_noop(repo):
    proc = repo.dvc("repro")
    output = proc.stdout + proc.stderr
    assert "Running stage" not in output, output
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert "Data and pipelines are up to date." in output
    repo.assert_up_to_date()


# --- bad raw data stops at validate -----------------------------------------------------------

def rewrite_raw(repo: Clone, transform) -> Path:
    """Rewrite the raw gzip CSV line by line (header included) through ``transform``."""
    raw = repo.raw_data_file()
    opener = gzip.open if raw.name.endswith(".gz") else open
    with opener(raw, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    new_lines = transform(lines)
    with opener(raw, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(new_lines) + "\n")
    return raw


def drop_field(lines: list[str], name: str) -> list[str]:
    index = [c.strip() for c in lines[0].split(",")].index(name)
    out = []
    for line in lines:
        fields = line.split(",")
        del fields[index]
        out.append(",".join(fields))
    return out


def set_field(lines: list[str], name: str, value: str) -> list[str]:
    index = [c.strip() for c in lines[0].split(",")].index(name)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        fields[index] = f" {value}" if index else value
        out.append(",".join(fields))
    return out


def test_missing_column_fails_validate_and_keeps_downstream(repo):
    repo.assert_up_to_date()
    before = repo.hashes(DOWNSTREAM)
    raw = repo.raw_data_file().relative_to(repo.path)
    with repo.restoring(str(raw)):
        rewrite_raw(repo, lambda lines: drop_field(lines, "hours_per_week"))
        output = run_repro_expecting_failure(repo)
        assert running_stages(output) == ["validate"], output
        assert re.search(r"missing column\(s\) \['hours_per_week'\]", output), output
        assert "failed to reproduce 'validate'" in output, output
        assert repo.hashes(DOWNSTREAM) == before
    assert repo.hashes(DOWNSTREAM) == before


def test_text_in_numeric_column_fails_validate_and_keeps_downstream(repo):
    repo.assert_up_to_date()
    before = repo.hashes(DOWNSTREAM)
    raw = repo.raw_data_file().relative_to(repo.path)
    with repo.restoring(str(raw)):
        rewrite_raw(repo, lambda lines: set_field(lines, "age", "forty"))
        output = run_repro_expecting_failure(repo)
        assert running_stages(output) == ["validate"], output
        # Every row fails age's type check; the log names the column and the check.
        assert re.search(r"age:coerce_dtype\('int64'\): 32561 rows", output), output
        assert "exceeds validate.max_rejected_share" in output, output
        quarantine = (repo.path / "data/quarantine/rejected.csv").read_text(encoding="utf-8")
        assert "forty" in quarantine and "age:coerce_dtype" in quarantine
        assert repo.hashes(DOWNSTREAM) == before
    assert repo.hashes(DOWNSTREAM) == before


# --- what a change reruns ---------------------------------------------------------------------

def test_train_parameter_change_reruns_train_evaluate_deploy(repo):
    repo.assert_up_to_date()
    features_before = repo.hashes(["data/features/train.parquet", "metrics/validation.json"])
    model_before = repo.hashes(["models/candidate/model.skops"])
    params = repo.params()
    assert params["train"]["estimator"] == "hist_gradient_boosting"
    hgb = params["train"]["hyperparameters"]["hist_gradient_boosting"]
    hgb["max_iter"] = 60 if hgb["max_iter"] != 60 else 50
    repo.write_params(params)
    proc = repo.dvc("repro")
    output = proc.stdout + proc.stderr
    assert running_stages(output) == ["train", "evaluate", "deploy"], output
    for stage in ("validate", "featurize"):
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert repo.hashes(["data/features/train.parquet", "metrics/validation.json"]) == features_before
    assert repo.hashes(["models/candidate/model.skops"]) != model_before
    card = repo.json("models/candidate/model_card.json")
    assert card["hyperparameters"]["max_iter"] == hgb["max_iter"]
    repo.assert_up_to_date()


def test_raw_data_change_reruns_every_stage(repo):
    repo.assert_up_to_date()
    rows_before = repo.json("metrics/validation.json")
    raw = repo.raw_data_file().relative_to(repo.path)

    def append_new_rows(lines: list[str]) -> list[str]:
        # Copies of real rows made unique through the survey weight (dropped before training),
        # so they are valid, non-duplicate rows and really change the validated data.
        header = [c.strip() for c in lines[0].split(",")]
        index = header.index("fnlwgt")
        existing = {line.split(",")[index].strip() for line in lines[1:]}
        new, weight = [], 1_234_567
        for line in lines[1:200]:
            fields = line.split(",")
            if "?" in line or int(fields[header.index("capital_gain")]) >= 99999:
                continue
            while str(weight) in existing:
                weight += 1
            fields[index] = f" {weight}"
            weight += 1
            new.append(",".join(fields))
            if len(new) == 5:
                break
        return lines + new

    with repo.restoring(str(raw)):
        rewrite_raw(repo, append_new_rows)
        proc = repo.dvc("repro")
        output = proc.stdout + proc.stderr
        assert running_stages(output) == list(STAGES), output
        rows_after = repo.json("metrics/validation.json")
        assert rows_after["rows_in"] == rows_before["rows_in"] + 5
        assert rows_after["rows_valid"] == rows_before["rows_valid"] + 5
        repo.assert_up_to_date()
    assert repo.json("metrics/validation.json") == rows_before


# --- experiments ------------------------------------------------------------------------------

def experiment_name(output: str) -> str:
    match = re.search(r"Ran experiment\(s\): (\S+)", output)
    assert match, output
    return match.group(1)


def find_experiment(shown, name: str) -> dict:
    """The ``data`` record of experiment ``name`` anywhere in ``dvc exp show --json`` output."""
    if isinstance(shown, dict):
        if shown.get("name") == name and isinstance(shown.get("data"), dict):
            return shown["data"]
        children = shown.values()
    elif isinstance(shown, list):
        children = shown
    else:
        return {}
    for child in children:
        found = find_experiment(child, name)
        if found:
            return found
    return {}


def mlflow_runs(repo: Clone) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.path / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids=experiments, max_results=1000)


def test_experiment_run_shows_params_and_metrics(repo):
    repo.assert_up_to_date()
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    proc = repo.dvc("exp", "run", "-S", "train.estimator=logistic_regression")
    output = proc.stdout + proc.stderr
    assert running_stages(output) == ["train", "evaluate", "deploy"], output
    name = experiment_name(output)
    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    data = find_experiment(shown, name)
    assert data, f"experiment {name} not in dvc exp show:\n{json.dumps(shown)[:3000]}"
    params = data["params"]["params.yaml"]["data"]
    assert params["train"]["estimator"] == "logistic_regression"
    evaluation = data["metrics"]["metrics/evaluation.json"]["data"]
    assert 0.8 < evaluation["roc_auc"] <= 1.0
    assert evaluation == repo.json("metrics/evaluation.json")  # results applied to the workspace
    assert "blessed" in data["metrics"]["metrics/gate.json"]["data"]
    # An experiment is a git ref, not a commit on the branch.
    assert repo.git("rev-parse", "HEAD").stdout.strip() == head
    assert name in repo.dvc("exp", "list", "--name-only").stdout.split()
    repo.assert_up_to_date()


def test_temp_experiment_logs_to_the_root_mlflow_store(repo):
    repo.assert_up_to_date()
    runs_before = {r.info.run_id for r in mlflow_runs(repo)}
    params_before = (repo.path / "params.yaml").read_bytes()
    proc = repo.dvc("exp", "run", "--temp", "-S", "train.seed=7")
    output = proc.stdout + proc.stderr
    name = experiment_name(output)
    assert "train" in running_stages(output), output

    runs_after = mlflow_runs(repo)
    new = [r for r in runs_after if r.info.run_id not in runs_before]
    assert len(runs_after) == len(runs_before) + 1, [r.data.tags.get("dvc_exp_name") for r in new]
    (run,) = new
    assert run.data.tags.get("dvc_exp_name") == name != "workspace", run.data.tags
    assert run.data.params.get("train.seed") == "7", run.data.params
    leaked = [str(p) for p in (repo.path / ".dvc" / "tmp").rglob("mlflow.db")]
    assert not leaked, f"MLflow store written inside the temporary copy: {leaked}"
    # --temp leaves the workspace alone, and the experiment is listed with its parameters.
    assert (repo.path / "params.yaml").read_bytes() == params_before
    data = find_experiment(json.loads(repo.dvc("exp", "show", "--json").stdout), name)
    assert data["params"]["params.yaml"]["data"]["train"]["seed"] == 7
    repo.assert_up_to_date()


def test_a_refused_promotion_puts_the_workspace_back(repo):
    """The gate refuses the experiment: exit 3, and params, dvc.lock, metrics and the deployment
    record are as they were; the deploy record never offered a promote command."""
    repo.assert_up_to_date()
    proc = repo.dvc("exp", "run", "--temp", "-S", "gate.change_thresholds.roc_auc.absolute=0.5")
    name = experiment_name(proc.stdout + proc.stderr)
    before = {path: (repo.path / path).read_bytes()
              for path in ("params.yaml", "dvc.lock", "metrics/gate.json", "deployments/champion.json")}
    refused = repo.python("-m", "mlops_template", "experiments", "promote", name, check=False, timeout=900)
    assert refused.returncode == ExitCode.NOT_BLESSED, refused.stdout + refused.stderr
    assert "not blessed" in refused.stdout and "back as it was" in refused.stdout, refused.stdout
    assert {path: (repo.path / path).read_bytes() for path in before} == before
    repo.assert_up_to_date()


def test_experiments_table_fits_a_terminal_and_a_blessed_experiment_is_promoted(repo):
    """Runs last in this module: it moves the champion to the promoted experiment's model."""
    repo.assert_up_to_date()
    champion_before = repo.json("deployments/champion.json")["champion"]["model_version"]
    proc = repo.dvc("exp", "run", "-S", "train.estimator=hist_gradient_boosting",
                    "-S", "train.hyperparameters.hist_gradient_boosting.learning_rate=0.2",
                    "-S", "gate.change_thresholds.roc_auc.absolute=-1.0")
    name = experiment_name(proc.stdout + proc.stderr)
    record = repo.json("deployments/champion.json")
    assert record["champion"]["model_version"] == champion_before  # an experiment never deploys
    assert f"experiments promote {name}" in " ".join(record["last_decision"]["reasons"])
    candidate = repo.json("models/candidate/model_card.json")["mlflow"]["model_version"]

    table = repo.python("-m", "mlops_template", "experiments", "show").stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80, table
    (start,) = [i for i, line in enumerate(lines) if line.strip().startswith(name)]
    shown = " ".join([lines[start], *itertools.takewhile(lambda line: line.startswith("    "), lines[start + 1:])])
    # The params it changed against its commit, wrapped below its row when they do not fit.
    assert "absolute=-1.0" in shown and "learning_rate=0.2" in shown, table
    assert lines[0].split()[:4] == ["Experiment", "roc_auc", "log_loss", "value/row"]

    missing = repo.python("-m", "mlops_template", "experiments", "promote", "no-such-exp", check=False)
    assert missing.returncode == ExitCode.BAD_INPUT and "no experiment named" in missing.stderr
    proc = repo.python("-m", "mlops_template", "experiments", "promote", name, timeout=900)
    assert "promoted" in proc.stdout, proc.stdout
    record = repo.json("deployments/champion.json")
    assert record["champion"]["model_version"] == candidate != champion_before
    assert repo.params()["train"]["hyperparameters"]["hist_gradient_boosting"]["learning_rate"] == 0.2
    repo.assert_up_to_date()
