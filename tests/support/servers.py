"""Shared by the service tests: a small trained model, free ports, server start and stop.

The model is a logistic regression on the first rows of the bundled data, packaged by each
test module into its own temporary BentoML home.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import requests

from mlops_template.core.contract import load_contract
from scripts.make_test_bento import train as train_test_model
from tests.support.waiting import exited, wait_until

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "contracts" / "adult.yaml"
RAW = REPO / "data" / "raw" / "adult.csv.gz"
THRESHOLD = 0.4
TRAIN_ROWS = 4000
TEST_ROWS = 200
STARTUP_TIMEOUT = 90.0
MAX_RECORDS = 200  # the limits the service tests' servers run with
MAX_BODY_BYTES = 1 << 20


# What a developer's shell may hold that no server a test starts may see: credentials of real
# object stores and registries, and team settings that would point a test server at them.
SCRUBBED_PREFIXES = ("AWS_", "ROUTING_", "MLFLOW_", "DASK_")
SCRUBBED_NAMES = frozenset({"INFERENCE_LOG_URL", "INCOMING_URL", "API_KEYS_FILE"})


def clean_env(explicit: Mapping[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without the developer's credentials and team settings, plus ``explicit``.

    Every server a test starts gets its environment here, so a shell that holds real
    ``AWS_*``/``MLFLOW_*``/``ROUTING_*`` settings, ``INFERENCE_LOG_URL``, ``INCOMING_URL`` or ``API_KEYS_FILE``
    never leaks them into a test server (which would then read or write the real store or
    registry). Variables with a prefix in ``drop`` are removed too; ``explicit`` ones always stay.
    """
    prefixes = SCRUBBED_PREFIXES + tuple(drop)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in SCRUBBED_NAMES}
    env.update(explicit or {})
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_small_model(model_dir: Path) -> tuple[pd.DataFrame, object, object]:
    """Train the small logistic regression of ``scripts/make_test_bento.py``; return held-out
    rows, the pipeline and the spec."""
    pipeline, spec, valid = train_test_model(model_dir, TRAIN_ROWS)
    test = valid.iloc[TRAIN_ROWS : TRAIN_ROWS + TEST_ROWS].reset_index(drop=True)
    return test, pipeline, spec


def wait_ready(url: str, process: subprocess.Popen, path: str = "/readyz") -> None:
    """Poll ``path`` until it answers 200, failing if the server exits or takes too long."""
    wait_until(lambda: requests.get(f"{url}{path}", timeout=2).status_code == 200, STARTUP_TIMEOUT, 0.3,
               f"bentoml serve: {url}{path} answering 200", ignore=(requests.ConnectionError, requests.Timeout),
               abort=exited(process))


def start_bento_server(tag: str, home: Path, log_path: Path, cwd: Path | None = None,
                       **env: str) -> tuple[subprocess.Popen, str]:
    """Start ``bentoml serve TAG`` on a free port with ``env`` added; return the process and URL.

    The server leads its own process group (see :func:`stop_server`); its output goes to
    ``log_path``; ``cwd`` is where it runs (where a ``module:Service`` target is imported from).
    """
    port = free_port()
    full_env = clean_env({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **env})
    command = [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port),
               "--host", "127.0.0.1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=cwd)
    return process, f"http://127.0.0.1:{port}"


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server and its workers (it leads its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def as_user(user: str | None, command: list[str]) -> list[str]:
    """``command`` run as ``user`` (PostgreSQL refuses to run as root), or as is."""
    return command if user is None else ["runuser", "-u", user, "--", *command]


def start_process(command: list[str], log: Path, env: Mapping[str, str] | None = None,
                  user: str | None = None, drop: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``command`` (as ``user``) in its own process group with output to ``log``.

    Its environment is :func:`clean_env` with ``env`` added (and ``drop`` prefixes removed).
    """
    command = as_user(user, command)
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=clean_env(env, drop),
                                start_new_session=True)


def wait_for(check: Callable[[], bool], process: subprocess.Popen | None, log: Path, what: str,
             timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll ``check()`` until it is true; fail with the log if the process dies or time runs out."""
    wait_until(check, timeout, 0.3, f"{what} ready", ignore=(requests.ConnectionError, requests.Timeout, OSError),
               abort=None if process is None else exited(process),
               context=lambda: log.read_text(errors="replace")[-3000:])


REGISTER_TWO_VERSIONS = """
import os, mlflow
client = mlflow.MlflowClient()
client.create_registered_model('adult-income')
for _ in range(2):
    client.create_model_version('adult-income', source=os.path.abspath('src'))
client.set_registered_model_alias('adult-income', 'champion', '1')
"""  # run with MLFLOW_TRACKING_URI set: a registry where a canary of v2 on v1 can be recorded


def records_of(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready records of the contract's input columns (NaN becomes null)."""
    inputs = [c.name for c in load_contract(CONTRACT).input_columns]
    return json.loads(frame[inputs].to_json(orient="records"))


def package_in_child(model_dir: Path, home: Path, export_dir: Path) -> dict:
    """Package the test model into the BentoML store ``home`` in a child process; return
    ``package_model``'s result. BentoML fixes its store path once per process, so packaging in the
    test process would land in whichever store a test used first."""
    code = ("import json, sys; from pathlib import Path; "
            "from mlops_template.pipeline.packaging import package_model; "
            "print(json.dumps(package_model(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), "
            "'adult-income', 'adult_income_service', {'model_version': '7', 'stage': 'test'}, "
            "Path(sys.argv[4]) / 'champion.bento')))")
    env = clean_env({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    done = subprocess.run([sys.executable, "-c", code, str(model_dir), str(CONTRACT),
                           str(THRESHOLD), str(export_dir)], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])
