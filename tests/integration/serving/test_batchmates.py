"""No client fails another: the batchmate attack, against a real ``bentoml serve``.

The bento is packaged with a contract drafted the way onboarding drafts one: every numeric bound
left open, so the contract admits any integer. Sixteen well-behaved clients send valid records
while one attacker sends, for a bounded time, a record the model cannot take:

- a 400-digit integer (beyond float64): refused by the request model, 400 naming record and field;
- two integers float64 can hold whose derived feature (``capital_gain - capital_loss``) cannot:
  admitted by the contract, so scoring the micro-batch fails, its requests are scored again one by
  one, and only the attacker's fails (422 naming the record).

Every well-behaved request must answer 200. The figures are logged for the README.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import (
    CONTRACT,
    REPO,
    THRESHOLD,
    records_of,
    start_bento_server,
    stop_server,
    train_small_model,
    wait_ready,
)

logger = logging.getLogger(__name__)

CLIENTS = 16
ATTACK_SECONDS = 10.0
HUGE = 10 ** 399  # 400 digits
OVERFLOWING = {"capital_gain": int(1.7e308), "capital_loss": -int(1.7e308)}  # gain - loss = inf

PACKAGE = """
import json, sys
from pathlib import Path
from mlops_template.pipeline.packaging import package_model
print(json.dumps(package_model(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), 'adult-income',
                               'adult_income_service', {'model_version': '1', 'stage': 'test'},
                               Path(sys.argv[4]) / 'champion.bento')))
"""


def open_bounds_contract(path: Path) -> Path:
    """The project's contract with every ``min``/``max`` removed, as onboarding drafts it."""
    raw = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    for spec in raw["columns"].values():
        spec.pop("min", None)
        spec.pop("max", None)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server of a bento whose contract has open numeric bounds; yields its URL and records."""
    root = tmp_path_factory.mktemp("batchmates")
    model_dir = root / "model"
    model_dir.mkdir()
    test, _, _ = train_small_model(model_dir)
    contract = open_bounds_contract(root / "drafted.yaml")
    home = root / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-c", PACKAGE, str(model_dir), str(contract), str(THRESHOLD),
                           str(root / "export")], env=env, cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=300)
    tag = json.loads(done.stdout.strip().splitlines()[-1])["bento_tag"]
    log = root / "serve.log"
    process, url = start_bento_server(tag, home, log, INFERENCE_LOG="off")
    try:
        wait_ready(url, process)
        yield {"url": url, "records": records_of(test), "log": log}
    finally:
        stop_server(process)


def attack(url: str, records: list[dict], poisoned: dict, seconds: float) -> tuple[Counter, Counter, list]:
    """CLIENTS threads send valid records while one sends ``poisoned``; statuses of each side."""
    stop = threading.Event()
    good: Counter = Counter()
    bad: Counter = Counter()
    bodies: list = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                record = records[(index * 7 + sum(good.values())) % len(records)]
                try:
                    status = session.post(f"{url}/predict", json={"records": [record]}, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                with lock:
                    good[status] += 1

    def attacker() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{url}/predict", json={"records": [records[0], poisoned]},
                                            timeout=30)
                except requests.RequestException:
                    bad[0] += 1
                    continue
                bad[response.status_code] += 1
                if len(bodies) < 3:
                    bodies.append(response.json())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=attacker))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return good, bad, bodies


def metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def report(what: str, good: Counter, bad: Counter) -> None:
    failed = sum(n for status, n in good.items() if status != 200)
    logger.warning("batchmate attack (%s): %d well-behaved requests, %d not 200 (%.2f%%) %s; "
                   "attacker statuses %s", what, sum(good.values()), failed,
                   100 * failed / max(sum(good.values()), 1), dict(good), dict(bad))


def test_a_400_digit_integer_fails_only_its_sender_with_400(drafted: dict) -> None:
    good, bad, bodies = attack(drafted["url"], drafted["records"], {**drafted["records"][1], "age": HUGE},
                               ATTACK_SECONDS)
    report("400-digit integer", good, bad)
    assert sum(good.values()) > 200, good  # the clients really were served meanwhile
    assert set(good) == {200}, good
    assert set(bad) == {400}, bad
    detail = bodies[0]["details"][0]
    assert bodies[0]["error"] == "validation" and detail["record"] == 1 and detail["field"] == "age"
    assert "float64" in detail["message"]


def test_an_unscorable_record_the_contract_admits_fails_only_its_sender_with_422(drafted: dict) -> None:
    url = drafted["url"]
    before = metric(url, "model_batch_isolations_total")
    good, bad, bodies = attack(url, drafted["records"], {**drafted["records"][1], **OVERFLOWING}, ATTACK_SECONDS / 2)
    report("derived overflow", good, bad)
    assert sum(good.values()) > 100, good
    assert set(good) == {200}, good
    assert set(bad) == {422}, bad
    assert bodies[0]["error"] == "unscorable" and bodies[0]["details"][0]["record"] == 1
    assert "record 1" in bodies[0]["message"] and "infinity" not in bodies[0]["message"]  # no internals
    assert metric(url, "model_batch_isolations_total") > before
    assert metric(url, "model_isolated_failures_total", cause="input") >= sum(bad.values())
    assert metric(url, "model_isolated_failures_total", cause="service") == 0
