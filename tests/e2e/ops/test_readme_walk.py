"""README.md walked as a new user walks it, in one fresh clone, section by section, in order.

Quickstart / The pipeline (``dvc repro``, commit what it wrote, freeze the golden set) ->
Experiments (two ``--temp`` runs, ``experiments show``, a refused and an accepted ``promote``) ->
Continuous training (a clean batch through ``retrain``, then ``rollback``).

Each step checks the output line, exit code and files the README promises at that point; the
README's words are quoted in comments. The tests share one clone and run in file order, each
building on the state the previous one left. About 4 minutes on this machine when it is quiet
(3 of them in dvc: the pipeline, two experiments, two promotes, a retrain).

The only departure from a fresh ``make pipeline``: before the first run, the last 25% of
``adult.csv.gz`` is held back (and committed) as the "new batch" that Continuous training
copies into ``data/incoming/`` later; a copy of accepted rows would be refused as duplicates.
"""

from __future__ import annotations

import json
import shutil

import pytest

from mlops_template.core.exitcodes import ExitCode
from tests.support.clones import STAGES, Clone, running_stages
from tests.support.retrain_helpers import last_json_line, split_raw

# --- every command line and exit code the walk uses, in one place --------------------------------
# (python is the venv's interpreter; dvc commands are run as `dvc ...`.)
GOLDEN_FREEZE = ("-m", "mlops_template", "golden", "freeze", "--reason", "first deploy")
EXPERIMENTS_SHOW = ("-m", "mlops_template", "experiments", "show")
EXPERIMENTS_PROMOTE = ("-m", "mlops_template", "experiments", "promote")  # + NAME
RETRAIN = ("-m", "mlops_template", "retrain")
ROLLBACK = ("-m", "mlops_template", "rollback")
# The README's "Exit codes" table.
EXIT_PROMOTED = ExitCode.OK               # "0 | OK | done"
EXIT_NOT_BLESSED = ExitCode.NOT_BLESSED   # "3 | NOT_BLESSED | the gate said no"
EXIT_RETRAIN_DONE = ExitCode.OK
EXIT_ROLLED_BACK = ExitCode.OK
# The README's two experiments, verbatim.
EXPERIMENT_1 = ("train.estimator", "random_forest")
EXPERIMENT_2 = ("train.hyperparameters.hist_gradient_boosting.learning_rate", "0.05")

NAME = "adult-income"
# (test_contract_and_validation's counts of the bundled file cannot hold here: this clone's set-up
# moved a quarter of adult.csv.gz into the held-back batch.)
UNIT_TESTS_READING_DATA = ("tests/unit/test_workspace_data.py",)
TRACKED_OUTPUTS = ("dvc.lock", "metrics", "deployments")  # "dvc.lock, metrics/ and deployments/"


def porcelain(repo: Clone) -> list[str]:
    """``git status --porcelain`` lines (untracked files included)."""
    return repo.git("status", "--porcelain").stdout.splitlines()


def tree_bytes(repo: Clone, *relatives: str) -> dict[str, bytes]:
    """Every file under ``relatives`` (files or folders), by path, with its content."""
    found = {}
    for relative in relatives:
        root = repo.path / relative
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found[str(path.relative_to(repo.path))] = path.read_bytes()
    return found


def experiment_name(output: str) -> str:
    """The name ``dvc exp run`` gives the experiment ("Ran experiment(s): NAME")."""
    marker = "Ran experiment(s): "
    assert marker in output, output[-3000:]
    return output.split(marker, 1)[1].split()[0]


def experiment_record(repo: Clone, name: str) -> dict:
    """The ``data`` of experiment ``name`` in ``dvc exp show --json``."""
    for commit in json.loads(repo.dvc("exp", "show", "--json").stdout):
        for experiment in commit.get("experiments") or []:
            for found in experiment.get("revs") or []:
                if found.get("name") == name:
                    return found["data"]
    raise AssertionError(f"experiment {name} not in dvc exp show --json")


@pytest.fixture(scope="module")
def walk(request, tmp_path_factory):
    """The clone, its held-back batch (``.batches``) and what earlier steps learned (``.seen``)."""
    base = tmp_path_factory.mktemp("readme-walk")
    repo = Clone.create(base / "repo", user="readme-walker")
    repo.batches = split_raw(repo.path / "data/raw/adult.csv.gz", base / "batches", share=0.25, parts=1)
    repo.git("add", "-A")
    repo.git("commit", "--quiet", "-m", "test setup: hold back a batch for Continuous training")
    repo.seen = {}
    yield repo
    if request.session.testsfailed == 0:  # keep the clone of a failed run for inspection
        shutil.rmtree(base, ignore_errors=True)


# --- Quickstart and The pipeline ----------------------------------------------------------------

def test_pipeline_deploys_and_writes_what_to_commit(walk: Clone):
    """`make pipeline` "runs `dvc repro` on the bundled data"."""
    proc = walk.dvc("repro")
    # The stage table, in order: validate, featurize, train, evaluate, deploy.
    assert running_stages(proc.stdout) == list(STAGES), proc.stdout[-3000:]
    # "writes what is deployed into git-tracked files: `dvc.lock`, `metrics/` and `deployments/`
    # (`champion.json`, `history.jsonl`, `routing.json`)"
    for name in ("champion.json", "history.jsonl", "routing.json"):
        assert (walk.path / "deployments" / name).is_file(), name
    changed = [line[3:] for line in porcelain(walk)]
    assert changed and all(path.startswith(TRACKED_OUTPUTS) for path in changed), changed
    record = walk.json("deployments/champion.json")
    assert record["champion"]["model_version"] == "1"
    # deploy: "exports a bento" to `models/serving/<service>.bento`
    assert (walk.path / record["champion"]["archive"]).is_file()
    assert [(h["action"], h["to_version"]) for h in walk.history()] == [("promote", "1")]
    # "Commit them, `git add dvc.lock metrics deployments && git commit -m "first model"`"
    walk.git("add", *TRACKED_OUTPUTS)
    walk.git("commit", "--quiet", "-m", "first model")
    assert porcelain(walk) == []
    walk.assert_up_to_date()


def test_golden_set_is_frozen_and_committed(walk: Clone):
    """"After the first model is deployed, fix a golden evaluation set: `python -m
    mlops_template.golden freeze --reason "first deploy"` ... Commit the manifest and
    `golden.parquet.dvc`"."""
    proc = walk.python(*GOLDEN_FREEZE)
    assert "golden set:" in proc.stdout, proc.stdout
    manifest = walk.json("data/golden/manifest.json")
    # "writes `data/golden/manifest.json` (sha256, rows, source, who, when, why)"
    assert {"sha256", "rows", "source", "frozen_by", "frozen_at", "reason"} <= set(manifest), manifest
    assert manifest["reason"] == "first deploy" and manifest["frozen_by"] == "readme-walker"
    assert (walk.path / "data/golden/golden.parquet.dvc").is_file()
    # `dvc add` also writes data/golden/.gitignore (which keeps golden.parquet out of git); the
    # README and the command's hint name only the two files above.
    walk.git("add", "data/golden/manifest.json", "data/golden/golden.parquet.dvc", "data/golden/.gitignore")
    walk.git("commit", "--quiet", "-m", "golden set")
    assert porcelain(walk) == []
    # evaluate depends on data/golden, so the pipeline is stale now (the README does not say so):
    # `dvc repro` "reruns only what changed", here the gate with the golden set, and nothing else.
    status = walk.dvc_status()
    assert list(status) == ["evaluate"], status
    proc = walk.dvc("repro")
    assert running_stages(proc.stdout)[:1] == ["evaluate"], proc.stdout[-3000:]
    gate = walk.json("metrics/gate.json")
    assert gate["golden"]["rows"] == manifest["rows"], gate.get("golden")
    assert walk.json("deployments/champion.json")["champion"]["model_version"] == "1"
    walk.git("add", *TRACKED_OUTPUTS)
    walk.git("commit", "--quiet", "-m", "gate with the golden set")
    assert porcelain(walk) == []
    walk.assert_up_to_date()


# --- Experiments ---------------------------------------------------------------------------------

def test_two_temp_experiments_leave_the_workspace_alone(walk: Clone):
    """"`--temp` and `--queue` run each experiment in a copy under `.dvc/tmp` and leave the
    workspace (and `params.yaml`) as it is, so the examples above each change one thing against
    the committed params."""
    params_before = (walk.path / "params.yaml").read_bytes()
    names = []
    for key, value in (EXPERIMENT_1, EXPERIMENT_2):
        proc = walk.dvc("exp", "run", "--temp", "-S", f"{key}={value}")
        names.append(experiment_name(proc.stdout + proc.stderr))
        assert (walk.path / "params.yaml").read_bytes() == params_before
        assert porcelain(walk) == []
    first, second = (experiment_record(walk, name) for name in names)
    first_params = first["params"]["params.yaml"]["data"]["train"]
    second_params = second["params"]["params.yaml"]["data"]["train"]
    # The second experiment changed the learning rate and only that: it is a gradient-boosting
    # model again (the issue: a workspace run left random_forest applied and trained it twice).
    assert first_params["estimator"] == "random_forest"
    assert second_params["estimator"] == "hist_gradient_boosting"
    assert second_params["hyperparameters"]["hist_gradient_boosting"]["learning_rate"] == 0.05
    first_auc, second_auc = (e["metrics"]["metrics/evaluation.json"]["data"]["roc_auc"] for e in (first, second))
    assert first_auc != second_auc
    walk.seen["experiments"] = names
    walk.assert_up_to_date()


def test_experiments_show_fits_80_columns_and_names_each_change(walk: Clone):
    """"one line per experiment, fits 80 columns"; "the gate's metrics, the blessing and only the
    params each row changed against the commit it ran from (... never cut)"."""
    table = walk.python(*EXPERIMENTS_SHOW).stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80, table
    assert lines[0].split()[:5] == ["Experiment", "roc_auc", "log_loss", "value/row", "blessed"], table
    first, second = walk.seen["experiments"]
    rows = {name: next(line for line in lines if line.strip().startswith(name)) for name in (first, second)}
    assert rows[first].split()[-1] == "estimator=random_forest", table
    assert rows[second].split()[-1] == "learning_rate=0.05", table
    blessed = {name: row.split()[4] for name, row in rows.items()}
    # The random forest is worse than the boosted champion by more than the change threshold.
    assert blessed == {first: "no", second: "yes"}, table


def test_a_refused_promote_puts_the_workspace_back(walk: Clone):
    """"3 when the gate says no, in which case it puts `params.yaml`, `dvc.lock`, `metrics/` and
    `deployments/` back as it found them (the refusal stays in `deployments/history.jsonl`) and
    restores DVC's outputs."""
    first, _ = walk.seen["experiments"]
    before = tree_bytes(walk, "params.yaml", "dvc.lock", "metrics", "deployments")
    history_before = walk.history()

    proc = walk.python(*EXPERIMENTS_PROMOTE, first, check=False)

    assert proc.returncode == EXIT_NOT_BLESSED, proc.stdout + proc.stderr
    assert "not blessed" in proc.stdout and "The workspace is back as it was" in proc.stdout, proc.stdout
    after = tree_bytes(walk, "params.yaml", "dvc.lock", "metrics", "deployments")
    history = "deployments/history.jsonl"
    assert {k: v for k, v in after.items() if k != history} == {k: v for k, v in before.items() if k != history}
    added = walk.history()[len(history_before):]
    assert walk.history()[:len(history_before)] == history_before
    assert [item["action"] for item in added] == ["reject"], added
    walk.seen["refused"] = added[0]
    assert [line[3:] for line in porcelain(walk)] == [history]
    walk.assert_up_to_date()  # "restores DVC's outputs"
    assert walk.json("models/candidate/model_card.json")["mlflow"]["model_version"] == "1"
    # Left uncommitted, as a user following the README would: the next promote's printed commit
    # takes it. (Committing here would hide the experiments from `promote`: `dvc exp list`
    # lists only those of the commit HEAD is on.)


def test_an_accepted_promote_deploys_and_prints_the_commit(walk: Clone):
    """"`promote NAME` applies the experiment to the workspace (`dvc exp apply`), evaluates it
    again against the champion serving now and runs deploy; it exits 0 when promoted and prints
    the `git commit` to record it"."""
    _, second = walk.seen["experiments"]
    proc = walk.python(*EXPERIMENTS_PROMOTE, second, check=False)

    assert proc.returncode == EXIT_PROMOTED, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith(f"{second}:"))
    assert "promoted" in line and "git commit" in line, proc.stdout
    champion = walk.json("deployments/champion.json")["champion"]
    candidate = walk.json("models/candidate/model_card.json")["mlflow"]["model_version"]
    assert champion["model_version"] == candidate not in ("1", None)
    assert walk.params()["train"]["hyperparameters"]["hist_gradient_boosting"]["learning_rate"] == 0.05
    assert str(walk.mlflow_client().get_model_version_by_alias(NAME, "champion").version) == candidate
    last = walk.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("promote", "1", candidate)
    walk.assert_up_to_date()
    # Record it with the command it printed.
    walk.run("sh", "-c", line.split("Commit it: ", 1)[1])
    assert porcelain(walk) == []
    walk.seen["promoted"] = candidate


# --- Continuous training -------------------------------------------------------------------------

def test_retrain_takes_a_clean_batch_and_prints_what_to_commit(walk: Clone):
    """"`cp new-batch.csv.gz data/incoming/`", then retrain: "without it [--commit], its last human
    line says the results are not committed and prints the `git add ... && git commit` to do it.
    Exit codes: 0 done"."""
    batch = walk.batches[0]
    shutil.copy(batch, walk.path / "data/incoming" / batch.name)

    proc = walk.python(*RETRAIN, check=False)

    assert proc.returncode == EXIT_RETRAIN_DONE, proc.stdout[-3000:] + proc.stderr[-3000:]
    human, _ = proc.stdout.strip().splitlines()[-2:]
    summary = last_json_line(proc.stdout)
    assert summary["status"] == "promoted", summary
    assert [a["batch"] for a in summary["accepted"]] == [batch.name]
    assert "not committed: git add" in human and "git commit -m" in human, human
    # "an accepted batch's report goes to `metrics/ingest/` (git-tracked)"; the batch joins data/raw/.
    assert (walk.path / "data/raw" / batch.name).read_bytes() == batch.read_bytes()
    assert sorted(p.name for p in (walk.path / "data/incoming").iterdir()) == ["README.md"]
    assert any(batch.name in p.name for p in (walk.path / "metrics/ingest").iterdir())
    champion = walk.json("deployments/champion.json")["champion"]["model_version"]
    assert champion == summary["candidate_version"] != walk.seen["promoted"]
    walk.assert_up_to_date()
    # Do what it printed: afterwards git has everything.
    command = human.split("not committed: ", 1)[1].removesuffix(" (or run with --commit)")
    walk.run("sh", "-c", command)
    assert porcelain(walk) == []
    walk.seen["retrained"] = champion


def test_the_unit_tier_passes_with_the_accepted_batch_in_data_raw(walk: Clone):
    """Issue 21: after the README's own retrain step, `make test-fast` failed, because a unit test
    counted every row under `data/raw/`. The unit tests that read the bundled data, run here."""
    assert len([p for p in (walk.path / "data/raw").iterdir() if p.name.endswith((".csv", ".csv.gz"))]) == 2
    proc = walk.python("-m", "pytest", *UNIT_TESTS_READING_DATA, "-q", "-p", "no:cacheprovider", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_rollback_returns_to_the_previous_champion(walk: Clone):
    """"Rollback points the MLflow alias `champion`, the routing file and
    `deployments/champion.json` back to the previous champion and exports its bento again as
    `models/serving/champion.bento`"."""
    previous, current = walk.seen["promoted"], walk.seen["retrained"]
    archive = walk.path / "models/serving/champion.bento"
    archive.unlink()

    proc = walk.python(*ROLLBACK, check=False)

    assert proc.returncode == EXIT_ROLLED_BACK, proc.stdout + proc.stderr
    assert f"rollback: {NAME} v{current} -> v{previous}" in proc.stdout, proc.stdout
    assert walk.json("deployments/champion.json")["champion"]["model_version"] == previous
    assert walk.json("deployments/routing.json")["champion"]["model_version"] == previous
    assert str(walk.mlflow_client().get_model_version_by_alias(NAME, "champion").version) == previous
    assert archive.is_file()
    last = walk.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rollback", current, previous)
    assert last["who"] == "readme-walker"


def test_the_history_kept_every_decision(walk: Clone):
    """"Every promotion, rejection and rollback is appended to `deployments/history.jsonl`"; the
    refused promote's line "stays in `deployments/history.jsonl`" (and git has it: every step
    above committed what it printed). Fails today: the accepted promote's `dvc exp apply` writes
    the experiment's copy of history.jsonl over the workspace's, which drops the refusal's line."""
    history = [(h["action"], h["to_version"]) for h in walk.history()]
    refused = walk.seen["refused"]
    assert history[0] == ("promote", "1"), history
    assert (refused["action"], refused["to_version"]) in history, history
    assert history[-3:] == [("promote", walk.seen["promoted"]), ("promote", walk.seen["retrained"]),
                            ("rollback", walk.seen["promoted"])], history
