"""Two operators at once: a rollback lands while a canary decision is half done.

Operator A runs ``canary decide`` (the challenger wins and is promoted); a test hook stops it just
before its routing write, after it has read the routing document and done the steps before it.
Operator B then runs the real ``mlops-template rollback --to 1``. Without the transition lease
and the conditional routing write, B succeeds, A resumes and writes the document it built from
what it read, and B's rollback is silently undone while both report success. With them, one of
the two is refused with exit 75 and the routing document names the champion of the one that
succeeded. Each operator is its own process with the project's real MLflow (sqlite), BentoML
store and records; the routing document is a file, or an object on moto's S3 server (team mode).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlops_template.ops import lease
from tests.support import team
from tests.support.servers import REPO, clean_env

SETUP = r"""
import hashlib, json, os, sys
from pathlib import Path
import bentoml, mlflow, yaml
from mlops_template.ops import records
from mlops_template.pipeline.tracking import resolve_tracking_uri
from mlops_template.serving import routing

params = yaml.safe_load(Path("params.yaml").read_text())
name = params["deploy"]["model_name"]
mlflow.set_tracking_uri(resolve_tracking_uri(params["mlflow"]["tracking_uri"]))
client = mlflow.MlflowClient()
client.create_registered_model(name)
deployed = {}
for version in ("1", "2", "3"):
    with bentoml.models.create(name, module="tests") as model:
        data = os.urandom(256)
        Path(model.path, "model.skops").write_bytes(data)
    client.create_model_version(name, source=f"file:///nowhere/{version}")
    deployed[version] = records.full_deployment({
        "model_name": name, "model_version": version, "model_tag": str(model.tag),
        "sha256": hashlib.sha256(data).hexdigest(), "deployed_at": "2026-12-01T00:00:00+00:00"})
for before, version in ((None, "1"), ("1", "2")):
    records.append(records.entry("promote", name, before, version, "setup", model_tag=deployed[version]["model_tag"],
                                 champion=deployed[version]))
records.append(records.entry("canary_start", name, "2", "3", "setup", model_tag=deployed["3"]["model_tag"]))
records.write_record(records.decision("canary_start", "2", "3", ["setup"]), champion=deployed["2"],
                     challenger=deployed["3"])
client.set_registered_model_alias(name, "champion", "2")
client.set_registered_model_alias(name, "challenger", "3")
document = routing.champion_only(name, deployed["2"]["model_tag"], "2", 0.5, deployed["2"]["sha256"])
document["challenger"] = routing.slot(deployed["3"]["model_tag"], "3", deployed["3"]["sha256"])
routing.write_routing(None, document)
"""

# Operator A: canary decide, stopped right before its routing write until the test says go.
CANARY = r"""
import sys, time
from pathlib import Path
from mlops_template.ops import canary, lease
from mlops_template.serving import routing

write = routing.write_routing

def paused(*args, **kwargs):
    Path("a-ready").touch()
    deadline = time.monotonic() + 300
    while not Path("go").exists():
        assert time.monotonic() < deadline, "never told to go on"
        time.sleep(0.05)
    return write(*args, **kwargs)

routing.write_routing = paused
figures = {"2": canary.VersionFigures(success=1000, latency_sum=10.0, latency_count=1000),
           "3": canary.VersionFigures(success=1000, latency_sum=10.0, latency_count=1000)}
try:
    decision = canary.decide(canary.load_params(), figures, None, None, False)
except (lease.Locked, routing.RoutingConflict) as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(75)
print(decision.action, flush=True)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with team.s3(tmp_path_factory.mktemp("s3"), "races") as part:
        yield part.url


def run(code_or_args: list[str], cwd: Path, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *code_or_args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def routing_now(repo: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", "import json; from mlops_template.serving import routing; "
                           "print(json.dumps(routing.read_routing()))"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("mode", ["file", "store"])
def test_a_rollback_racing_a_canary_decision_is_never_silently_undone(mode: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    repo = tmp_path / "repo"
    (repo / "deployments").mkdir(parents=True)
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    name = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["deploy"]["model_name"]
    env = clean_env({"BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
                     "MLFLOW_ENABLE_TELEMETRY": "false", "PYTHONPATH": str(REPO)}, drop=(lease.OWNER_ENV_VAR,))
    if mode == "store":
        from mlops_template.core import signing

        signing.generate_key_pair(tmp_path / "deploy.key", tmp_path / "deploy.pub")
        endpoint = request.getfixturevalue("store")
        env.update(team.s3_env(endpoint), ROUTING_URL=f"s3://races/{tmp_path.name}/routing.json",
                   ROUTING_SIGNING_KEY_FILE=str(tmp_path / "deploy.key"))
    setup = subprocess.run([sys.executable, "-c", SETUP], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=300)
    assert setup.returncode == 0, setup.stderr[-3000:]

    operator_a = run(["-c", CANARY], repo, env)
    deadline = time.monotonic() + 300
    while not (repo / "a-ready").exists():  # A has read the document and is about to write it
        assert operator_a.poll() is None, finished(operator_a)
        assert time.monotonic() < deadline, "operator A never reached its routing write"
        time.sleep(0.1)
    # The routing document comes last: A has recorded the promotion, serving has not changed yet.
    assert json.loads((repo / "deployments" / "champion.json").read_text())["champion"]["model_version"] == "3"
    assert json.loads((repo / "deployments" / "history.jsonl").read_text().splitlines()[-1])["action"] == \
        "canary_promote"
    assert routing_now(repo, env)["champion"]["model_version"] == "2"
    code_b, out_b = finished(run(["-m", "mlops_template", "rollback", "--to", "1", "--reason", "race"], repo, env))
    (repo / "go").touch()
    code_a, out_a = finished(operator_a)

    outcomes = {"canary": code_a, "rollback": code_b}
    assert sorted(outcomes.values()) == [0, 75], (outcomes, out_a[-2000:], out_b[-2000:])
    winner = "canary" if code_a == 0 else "rollback"
    serving = routing_now(repo, env)["champion"]["model_version"]
    assert serving == {"canary": "3", "rollback": "1"}[winner], (winner, serving)  # the winner's change stands
    loser_output = out_b if winner == "canary" else out_a
    assert "lease" in loser_output or "changed since it was read" in loser_output, loser_output[-2000:]
    history = [json.loads(line) for line in (repo / "deployments" / "history.jsonl").read_text().splitlines()]
    if winner == "canary":  # the rollback was refused before it changed anything
        assert [e["action"] for e in history if e["model_name"] == name][-1] == "canary_promote"
        assert not [e for e in history if e["action"] == "rollback"]
