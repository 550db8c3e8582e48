"""Hot-reloaded routing and canary releases, against real ``bentoml serve`` processes.

A second, different model (v8, a more regularised logistic regression) is packaged into the
session's BentoML store beside the bento's own (v7), plus a copy of v8 whose file is tampered
with (v9). Servers get ``ROUTING_FILE`` and are steered by rewriting it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlops_template.core import apikeys
from mlops_template.core.exitcodes import ExitCode
from mlops_template.serving import routing
from mlops_template.serving.routing import routes_to_challenger
from tests.support.servers import REGISTER_TWO_VERSIONS, REPO
from tests.support.waiting import wait_until

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
SHARE = 0.1
CANARY_REQUESTS = 1000
LOAD_THREADS = 4
LOAD_SECONDS = 10.0
SWITCH_AT = 3.0  # seconds into the load when the routing file is rewritten

RECORDED: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _models_store(bento: dict) -> None:
    """Where :func:`_recorded` finds the digests packaging recorded (what deploy writes)."""
    RECORDED["home"] = Path(bento["home"])


def _recorded(tag: str) -> str | None:
    """The model file's sha256 packaging recorded for ``tag`` in the session's store, if it is there."""
    name, _, version = tag.partition(":")
    info = RECORDED["home"] / "models" / name / version / "model.yaml"
    return yaml.safe_load(info.read_text(encoding="utf-8"))["metadata"]["sha256"] if info.exists() else None


def _write(path: Path, tags: dict[str, str], champion: str, challenger: str | None = None,
           share: float = SHARE, digests: dict[str, str] | None = None) -> None:
    """Write a routing file naming versions by their tags, with their recorded digests
    (``digests``, by version, for a model the store does not hold yet)."""
    digests = digests or {}
    document = routing.champion_only("adult-income", tags[champion], champion, share,
                                     digests.get(champion) or _recorded(tags[champion]))
    if challenger is not None:
        document["challenger"] = routing.slot(tags[challenger], challenger,
                                              digests.get(challenger) or _recorded(tags[challenger]))
    routing.write_routing(path, document)


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _predict(url: str, record: dict, key: str | None = None) -> requests.Response:
    """One record, sent with the API key ``key`` (whose name is the canary's routing key), if any."""
    return requests.post(f"{url}/predict", json={"records": [record]}, headers=_bearer(key),
                         timeout=30)


def _sample(url: str, name: str, key: str | None = None, **labels: str) -> float:
    """One sample's value on /metrics (0 when absent), read with API key ``key`` if one is needed."""
    text = requests.get(f"{url}/metrics", headers=_bearer(key), timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def canary(start_server: Callable, bento: dict, tags: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], str, dict[str, str]]]:
    """A server running a v8 canary on v7 that answered CANARY_REQUESTS keyed requests.

    The routing key is the name of the client's API key: the server checks a file of
    CANARY_REQUESTS keys, and a request with the key named ``user-i`` is ``user-i``'s. It yields
    the URL, the model that served each key name, the metrics, and the keys by name.
    """
    root = tmp_path_factory.mktemp("canary")
    path = root / "routing.json"
    _write(path, tags, "7", "8")
    keys = {f"user-{i}": f"canary-test-key-{i}-{os.urandom(8).hex()}" for i in range(CANARY_REQUESTS)}
    (root / "keys.txt").write_text("".join(f"{apikeys.digest(k)} {name}\n" for name, k in keys.items()),
                                   encoding="utf-8")
    with start_server("canary", ROUTING_FILE=str(path), ROUTING_POLL_SECONDS=str(POLL_SECONDS),
                      API_KEYS_FILE=str(root / "keys.txt")) as url:
        record = bento["records"][0]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda i: (f"user-{i}", _predict(url, record, keys[f"user-{i}"])), range(CANARY_REQUESTS)))
        assert all(r.status_code == 200 for _, r in answers)
        served = {key: r.json()[0]["model_version"] for key, r in answers}
        yield url, served, requests.get(f"{url}/metrics", headers=_bearer(keys["user-0"]), timeout=10).text, keys


def test_canary_split(canary: tuple[str, dict[str, str], str, dict[str, str]], bento: dict) -> None:
    """About SHARE of the keys go to the challenger, and a key always gets the same model."""
    url, served, _, keys = canary
    share = sum(v == "8" for v in served.values()) / len(served)
    sigma = math.sqrt(SHARE * (1 - SHARE) / len(served))
    logger.warning("challenger share %.3f (expected %.2f +- %.3f)", share, SHARE, 4 * sigma)
    assert abs(share - SHARE) < 4 * sigma
    assert set(served.values()) == {"7", "8"}
    for key, version in served.items():
        assert (version == "8") == routes_to_challenger(key, SHARE), key
    for key in list(served)[:100]:  # asked again: same model
        assert _predict(url, bento["records"][1], keys[key]).json()[0]["model_version"] == served[key]
    for key in list(served)[:20]:  # a client's own X-Routing-Key is ignored: its key's name decides
        other = next(k for k, v in served.items() if v != served[key])
        steered = requests.post(f"{url}/predict", json={"records": [bento["records"][1]]}, timeout=30,
                                headers={**_bearer(keys[key]), "X-Routing-Key": other})
        assert steered.json()[0]["model_version"] == served[key]
    assert _sample(url, "model_info", keys["user-0"], model_version="8", role="challenger") == 1
    assert _sample(url, "model_info", keys["user-0"], model_version="7", role="champion") == 1


def _load(url: str, record: dict, stop: threading.Event,
          answers: list[tuple[float, int, str | None]]) -> None:
    """Send requests until ``stop``; record (time, status, model version) of each answer."""
    session = requests.Session()
    while not stop.is_set():
        try:
            response = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
            version = response.json()[0]["model_version"] if response.status_code == 200 else None
            answers.append((time.monotonic(), response.status_code, version))
        except requests.RequestException:
            answers.append((time.monotonic(), 0, None))


def test_rollback_under_load(start_server: Callable, bento: dict, tags: dict[str, str],
                             tmp_path: Path) -> None:
    """Switching the champion from v8 back to v7 under load fails no request."""
    path = tmp_path / "routing.json"
    _write(path, tags, "8")
    with start_server("rollback", ROUTING_FILE=str(path),
                      ROUTING_POLL_SECONDS=str(POLL_SECONDS)) as url:
        answers: list[tuple[float, int, str | None]] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(url, bento["records"][i], stop, answers))
                   for i in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(SWITCH_AT)
        _write(path, tags, "7")
        written = time.monotonic()
        time.sleep(LOAD_SECONDS - SWITCH_AT)
        stop.set()
        for thread in threads:
            thread.join()
    failed = [a for a in answers if a[1] != 200]
    old = [t for t, _, v in answers if v == "7"]
    last_new = max(t for t, _, v in answers if v == "8")
    logger.warning("rollback under load: %d requests, %d failed; first v7 answer %.2f s after "
                   "the write, last v8 answer %.2f s after it", len(answers), len(failed),
                   min(old) - written, last_new - written)
    assert not failed
    assert all(v == "8" for t, _, v in answers if t < written)
    assert last_new - written < POLL_SECONDS + 2.0
    assert all(v == "7" for t, _, v in answers if t > written + POLL_SECONDS + 2.0)
    assert len(old) > 50


def test_bad_routing_keeps_serving(start_server: Callable, bento: dict, tags: dict[str, str],
                                   tmp_path: Path) -> None:
    """A missing model, a tampered model or a broken file: v7 keeps answering, failures counted."""
    path = tmp_path / "routing.json"
    _write(path, tags, "7")
    with start_server("bad-routing", ROUTING_FILE=str(path),
                      ROUTING_POLL_SECONDS=str(POLL_SECONDS)) as url:
        bad_tags = {**tags, "404": "adult-income:doesnotexist"}
        writes = [lambda: _write(path, bad_tags, "404", digests={"404": _recorded(tags["7"])}),
                  lambda: _write(path, tags, "9"),
                  lambda: path.write_text("{not json", encoding="utf-8")]
        for count, write in enumerate(writes, start=1):
            write()

            def counted(count: int = count) -> bool:  # serving v7 all the while
                if _sample(url, "model_routing_reload_failures_total") >= count:
                    return True
                response = _predict(url, bento["records"][0])
                assert response.status_code == 200 and response.json()[0]["model_version"] == "7"
                return False

            wait_until(counted, POLL_SECONDS + 10, 0.01, f"reload failure {count} counted")
        assert _sample(url, "model_routing_reload_failures_total") == len(writes)
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
        assert _predict(url, bento["records"][0]).json()[0]["model_version"] == "7"


def _run_canary(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m mlops_template canary ARGS`` in ``workdir``, on its own MLflow store."""
    env = {**os.environ, "ROUTING_FILE": str(workdir / "routing.json"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mlops_template", "canary", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workdir(tmp_path: Path, tags: dict[str, str]) -> Path:
    """A repository-like directory: params, a routing file with a v8 canary, a registry."""
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    # a 2-core box scoring both models under load: allow timing noise, not a real regression
    params = params.replace("deploy:\n", "deploy:\n  canary_max_latency_ratio: 2.0\n", 1)
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    _write(tmp_path / "routing.json", {"1": tags["7"], "2": tags["8"]}, "1", "2")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-c", REGISTER_TWO_VERSIONS], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=120)
    return tmp_path


def _history(workdir: Path) -> list[dict]:
    lines = (workdir / "deployments" / "history.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_canary_decide(canary: tuple[str, dict[str, str], str, dict[str, str]], workdir: Path) -> None:
    """Live figures of a healthy canary promote it; a failing challenger is rolled back."""
    _, _, metrics, _ = canary
    # The registry in workdir numbers the versions 1 and 2: relabel the live figures to match.
    live = metrics.replace('model_version="7"', 'model_version="1"').replace(
        'model_version="8"', 'model_version="2"')
    (workdir / "live.txt").write_text(live, encoding="utf-8")
    waiting = _run_canary(workdir, "decide", "--metrics-file", "live.txt", "--min-requests", "5000")
    assert waiting.returncode == ExitCode.WAIT, waiting.stdout + waiting.stderr

    failing = live.replace('model_version_requests_total{model_version="2",outcome="error"} 0.0',
                           'model_version_requests_total{model_version="2",outcome="error"} 20.0')
    assert failing != live
    (workdir / "failing.txt").write_text(failing, encoding="utf-8")
    rolled = _run_canary(workdir, "decide", "--metrics-file", "failing.txt")
    assert rolled.returncode == ExitCode.ROLLED_BACK, rolled.stdout + rolled.stderr
    assert routing.read_routing(workdir / "routing.json")["challenger"] is None
    assert _history(workdir)[-1]["action"] == "canary_rollback"

    _write(workdir / "routing.json", {"1": "adult-income:a", "2": "adult-income:b"}, "1", "2")
    promoted = _run_canary(workdir, "decide", "--metrics-file", "live.txt")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    document = routing.read_routing(workdir / "routing.json")
    assert document["champion"]["model_version"] == "2" and document["challenger"] is None
    entry = _history(workdir)[-1]
    assert entry["action"] == "canary_promote" and entry["to_version"] == "2"
    record = json.loads((workdir / "deployments" / "champion.json").read_text(encoding="utf-8"))
    assert record["champion"]["model_version"] == "2"
    assert record["last_decision"]["action"] == "canary_promote"
    status = _run_canary(workdir, "status")
    assert status.returncode == 0 and '"challenger": null' in status.stdout


LATE_MODEL_CODE = """
import shutil, sys
from pathlib import Path
import bentoml
source = bentoml.models.get(sys.argv[1])
with bentoml.models.create(sys.argv[2] if len(sys.argv) > 2 else 'adult-income:late', labels=dict(source.info.labels),
                           metadata=dict(source.info.metadata)) as late:
    for item in Path(source.path).iterdir():
        if item.is_file() and item.name != 'model.yaml':
            shutil.copy2(item, Path(late.path) / item.name)
"""


def test_a_model_that_reaches_the_store_after_the_routing_file_is_picked_up(
        start_server: Callable, bento: dict, tags: dict[str, str], tmp_path: Path) -> None:
    """The reload is retried (and counted once) until the model the file names exists."""
    path = tmp_path / "routing.json"
    _write(path, tags, "7")
    with start_server("late-model", ROUTING_FILE=str(path), ROUTING_POLL_SECONDS=str(POLL_SECONDS)) as url:
        _write(path, {**tags, "8": "adult-income:late"}, "8", digests={"8": _recorded(tags["8"])})
        wait_until(lambda: _sample(url, "model_routing_reload_failures_total") >= 1, 10, 0.2,
                   "the failed reload counted")
        time.sleep(3 * POLL_SECONDS)  # retries meanwhile: still one failure, still v7
        assert _sample(url, "model_routing_reload_failures_total") == 1
        assert _predict(url, bento["records"][0]).json()[0]["model_version"] == "7"
        env = {**os.environ, "BENTOML_HOME": str(bento["home"]), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-c", LATE_MODEL_CODE, tags["8"]], env=env, check=True,
                       capture_output=True, timeout=120)
        wait_until(lambda: _predict(url, bento["records"][0]).json()[0]["model_version"] == "8",
                   30, 0.3, "the late model picked up")  # within the retry backoff bound
        assert _sample(url, "model_routing_reload_failures_total") == 1


def test_a_model_missing_at_start_up_is_retried_until_the_document_serves(
        start_server: Callable, bento: dict, tags: dict[str, str], tmp_path: Path) -> None:
    """The replica that never caught up: the routing file names a model the store does not hold yet
    when the server starts, so the pinned v7 serves, saying that the document is not applied; once the
    model arrives, the document's model serves without anyone rewriting the file (one failure counted)."""
    path = tmp_path / "routing.json"
    late = "adult-income:lateatstart"
    _write(path, {**tags, "8": late}, "8", digests={"8": _recorded(tags["8"])})
    with start_server("late-at-start", ROUTING_FILE=str(path), ROUTING_POLL_SECONDS=str(POLL_SECONDS)) as url:
        assert _predict(url, bento["records"][0]).json()[0]["model_version"] == "7"
        before = requests.get(f"{url}/readyz", timeout=10).json()["routing"]
        applied_before = _sample(url, "model_routing_applied")
        env = {**os.environ, "BENTOML_HOME": str(bento["home"]), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-c", LATE_MODEL_CODE, tags["8"], late], env=env, check=True,
                       capture_output=True, timeout=120)
        wait_until(lambda: _predict(url, bento["records"][0]).json()[0]["model_version"] == "8",
                   45, 0.3, "the document's model picked up after start-up")  # retries back off to 30 s apart
        after = requests.get(f"{url}/readyz", timeout=10).json()["routing"]
        assert _sample(url, "model_routing_applied") == 1
        assert _sample(url, "model_routing_reload_failures_total") == 1
    assert before["applied"] is False and before["serving"] == {"champion": "7"}, before
    assert late in before["retrying"]["error"], before
    assert applied_before == 0
    assert after["applied"] is True and after["serving"] == {"champion": "8"} and "retrying" not in after, after
