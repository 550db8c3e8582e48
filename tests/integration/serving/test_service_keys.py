"""The service's own API keys (``API_KEYS_FILE``), against a real ``bentoml serve``.

Keys are made with the documented command (``python -m mlops_template apikeys``), revoked while
the server runs, and the key file is broken and mended under it.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import waiting
from tests.support.servers import REPO, free_port, start_process, stop_server, wait_for

RELOAD_DEADLINE_S = 10.0  # waiting is what is tested: a change must apply without a restart


def apikeys(*args: str) -> subprocess.CompletedProcess:
    """``python -m mlops_template apikeys ARGS``, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "mlops_template", "apikeys", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def predict(url: str, record: dict, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{url}/predict", json={"records": [record]}, headers=headers or {}, timeout=30)


def unauthorized(url: str, key: str, reason: str) -> float:
    text = requests.get(f"{url}/metrics", headers=bearer(key), timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "model_unauthorized_requests_total" and s.labels.get("reason") == reason)


def wait_until(check: Callable[[], bool], what: str) -> float:
    """Poll ``check`` until true; return how long it took."""
    started = time.monotonic()
    waiting.wait_until(check, RELOAD_DEADLINE_S, 0.1, f"{what} seen")
    return time.monotonic() - started


@pytest.fixture(scope="module")
def keyed(start_server: Callable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server that checks a key file holding the keys 'alice' and 'prometheus'."""
    root = tmp_path_factory.mktemp("service-keys")
    path = root / "keys.txt"
    keys = {name: apikeys("create", name, "--file", str(path)).stdout.strip() for name in ("alice", "prometheus")}
    with start_server("keys", API_KEYS_FILE=str(path)) as url:
        yield {"url": url, "path": path, "keys": keys}


def assert_401(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized" and "Authorization: Bearer" in body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_predict_needs_a_valid_key(keyed: dict, bento: dict) -> None:
    url, keys, record = keyed["url"], keyed["keys"], bento["records"][0]
    before = {r: unauthorized(url, keys["prometheus"], r) for r in ("missing_key", "unknown_key")}
    assert_401(predict(url, record))
    assert_401(predict(url, record, {"Authorization": keys["alice"]}))  # no scheme
    assert_401(predict(url, record, bearer(keys["alice"] + "x")))
    assert_401(predict(url, record, bearer("mtk_" + "A" * 43)))
    refused = predict(url, record, {"X-Request-ID": "client-7"})
    assert_401(refused)
    assert refused.headers["X-Client-Request-ID"] == "client-7" != refused.headers["X-Request-ID"]
    answered = predict(url, record, bearer(keys["alice"]))
    assert answered.status_code == 200, answered.text
    assert 0.0 <= answered.json()[0]["probability"] <= 1.0
    assert unauthorized(url, keys["prometheus"], "missing_key") == before["missing_key"] + 3  # none, no scheme
    assert unauthorized(url, keys["prometheus"], "unknown_key") == before["unknown_key"] + 2


def test_metrics_and_docs_need_a_key_and_the_probes_do_not(keyed: dict) -> None:
    url, keys = keyed["url"], keyed["keys"]
    assert_401(requests.get(f"{url}/metrics", timeout=10))
    assert_401(requests.get(f"{url}/docs.json", timeout=10))
    scraped = requests.get(f"{url}/metrics", headers=bearer(keys["prometheus"]), timeout=10)
    assert scraped.status_code == 200 and "model_info" in scraped.text
    document = requests.get(f"{url}/docs.json", headers=bearer(keys["alice"]), timeout=10).json()
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert "WWW-Authenticate" in responses["401"]["headers"] and "422" in responses
    for probe in ("/livez", "/healthz", "/readyz"):
        assert requests.get(f"{url}{probe}", timeout=10).status_code == 200, probe


def test_a_revoked_key_is_refused_and_a_new_one_admitted_without_restart(keyed: dict, bento: dict) -> None:
    url, path, record = keyed["url"], str(keyed["path"]), bento["records"][0]
    doomed = apikeys("create", "temporary", "--file", path).stdout.strip()
    wait_until(lambda: predict(url, record, bearer(doomed)).status_code == 200, "the new key admitted")
    apikeys("revoke", "temporary", "--file", path)
    took = wait_until(lambda: predict(url, record, bearer(doomed)).status_code == 401, "the revocation")
    assert predict(url, record, bearer(keyed["keys"]["alice"])).status_code == 200
    assert took < 2.0  # the file is checked on every request


def test_a_broken_key_file_fails_closed_and_recovers(start_server: Callable, bento: dict, tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    key = apikeys("create", "alice", "--file", str(path)).stdout.strip()
    good = path.read_text(encoding="utf-8")
    record = bento["records"][0]
    with start_server("keys-broken", API_KEYS_FILE=str(path)) as url:
        assert predict(url, record, bearer(key)).status_code == 200
        path.write_text(good + "this is not a digest\n", encoding="utf-8")
        wait_until(lambda: predict(url, record, bearer(key)).status_code == 401, "failing closed")
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        path.write_text(good, encoding="utf-8")
        wait_until(lambda: predict(url, record, bearer(key)).status_code == 200, "recovery")
        assert unauthorized(url, key, "key_file_unusable") >= 1
    log = (Path(bento["root"]) / "serve-keys-broken.log").read_text(encoding="utf-8")
    assert "line 2: expected '<sha256 hex, lowercase> <name>'" in log
    assert "refused with 401 until it is fixed" in log


def test_a_missing_key_file_at_start_admits_nobody(start_server: Callable, bento: dict, tmp_path: Path) -> None:
    with start_server("keys-missing", API_KEYS_FILE=str(tmp_path / "nowhere.txt")) as url:
        assert_401(predict(url, bento["records"][0], bearer("mtk_anything")))
        assert_401(requests.get(f"{url}/metrics", timeout=10))
    log = (Path(bento["root"]) / "serve-keys-missing.log").read_text(encoding="utf-8")
    assert f"key file {tmp_path / 'nowhere.txt'} cannot be read" in log


def test_open_mode_says_so_in_its_first_line(server: str, bento: dict) -> None:
    """Without API_KEYS_FILE the service answers anyone, and the first line it logs says so."""
    assert predict(server, bento["records"][0]).status_code == 200
    log = (Path(bento["root"]) / "serve-default.log").read_text(encoding="utf-8").splitlines()
    worker = [line for line in log if "[entry_service:" in line]  # the lines of the service's worker
    assert worker, log
    assert "[WARNING]" in worker[0] and "OPEN SERVICE: API_KEYS_FILE is not set" in worker[0], worker[:3]


def test_prometheus_scrapes_with_a_key_from_a_credentials_file(keyed: dict, tmp_path: Path) -> None:
    """The repository's scrape job, with its documented ``authorization`` block filled in, scrapes a
    keyed service; the same job without it is refused (``up`` 0)."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    target = keyed["url"].removeprefix("http://")
    (tmp_path / "prometheus.key").write_text(keyed["keys"]["prometheus"] + "\n", encoding="utf-8")
    config = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "model-service")
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [target]}])
    keyless = {**copy.deepcopy(job), "job_name": "model-service-keyless"}
    job["authorization"] = {"type": "Bearer", "credentials_file": str(tmp_path / "prometheus.key")}
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job, keyless]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port, log = free_port(), tmp_path / "prometheus.log"
    process = start_process([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], log)
    try:
        def up() -> dict[str, float]:
            answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}, timeout=5)
            return {r["metric"]["job"]: float(r["value"][1]) for r in answer.json()["data"]["result"]}

        wait_for(lambda: len(up()) == 2, process, log, "both scrapes")
        assert up() == {"model-service": 1.0, "model-service-keyless": 0.0}
    finally:
        stop_server(process)
