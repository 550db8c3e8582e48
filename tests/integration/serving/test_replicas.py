"""Team mode serving: three ``bentoml serve`` replicas behind the real HAProxy front, one shared
routing document in an S3-protocol store (moto's server), inference logs shipped to the same store.

Each replica has a BentoML home of its own holding only the imported bento (as if on its own
host), so a model the routing document names reaches it only through the object store. The
writer (what the deploy stage, canary and rollback do) runs in a child process with the
session's store, which has both models, and signs with the deploy key
(``ROUTING_SIGNING_KEY_FILE``); the replicas hold only its public half (``ROUTING_VERIFY_KEY_FILE``).
Untrusted documents (unsigned, another key's, a wrong ``model_sha256``, a tampered archive) are
refused by every replica, which keeps serving under load.

Figures (promotion and rollback time to reach every replica, failed requests meanwhile) are
logged as warnings: run with ``-s -o log_cli=true`` to read them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from mlops_template.core import objectstore, signing
from mlops_template.core.exitcodes import ExitCode
from mlops_template.ops.process import shared_services_down
from mlops_template.serving import routing
from mlops_template.serving.inference_log import read_log
from tests.support import team
from tests.support.front import Front, haproxy_binary, haproxy_front
from tests.support.servers import REPO, start_bento_server, stop_server, wait_ready
from tests.support.waiting import poll

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")

BUCKET = "team"
ROUTING_URL = f"s3://{BUCKET}/serving/routing.json"
LOG_URL = f"s3://{BUCKET}/inference-log"
REPLICAS = 3
POLL_SECONDS = 0.5
SWITCH_BOUND_S = 20.0  # a routing change must reach every replica within this
LOAD_THREADS = 3

WRITE_CODE = """
import json, sys, time
from mlops_template.serving import routing
routing.write_routing(sys.argv[1], json.loads(sys.argv[2]))
print(time.time())
"""


class Load(threading.Thread):
    """Keeps single-record requests going through the front; records every answer."""

    def __init__(self, url: str, record: dict, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.record, self.headers = url, record, headers
        self.stop = threading.Event()
        self.answers: list[tuple[float, int, str | None, str | None]] = []  # (time, status, version, id)
        self.lock = threading.Lock()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    answer = session.post(f"{self.url}/predict", json={"records": [self.record]},
                                          headers=self.headers, timeout=30)
                    status = answer.status_code
                    version = answer.json()[0]["model_version"] if status == 200 else None
                    request_id = answer.headers.get("x-request-id")
                except requests.RequestException:
                    status, version, request_id = 0, None, None
                with self.lock:
                    self.answers.append((time.monotonic(), status, version, request_id))

    def failures(self) -> list[tuple[float, int, str | None, str | None]]:
        with self.lock:
            return [a for a in self.answers if a[1] != 200]


@contextlib.contextmanager
def loading(front: Front, record: dict) -> Iterator[list[Load]]:
    """Requests through ``front`` with its API key, from LOAD_THREADS threads, while the block runs."""
    threads = [Load(front.url, record, front.auth) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join(60)


def _write_routing(env: dict[str, str], document: dict) -> float:
    """Publish a routing document (and its models) as the deploy stage would, from the writer's store;
    return the wall-clock time when the document's PUT was done."""
    done = subprocess.run([sys.executable, "-c", WRITE_CODE, ROUTING_URL, json.dumps(document)], env=env,
                          cwd=REPO, check=True, timeout=120, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def _served_version(url: str, record: dict) -> str | None:
    try:
        answer = requests.post(f"{url}/predict", json={"records": [record]}, timeout=10)
    except requests.RequestException:
        return None
    return answer.json()[0]["model_version"] if answer.status_code == 200 else None


def _until_all_serve(replicas: list[str], record: dict, version: str, since: float, timeout: float) -> float:
    """Seconds from ``since`` (wall clock) until every replica was seen answering with ``version``
    (an upper bound: a replica may have switched before it was asked); fails after ``timeout``."""
    pending = set(replicas)

    def still_pending() -> set[str]:
        pending.difference_update({url for url in pending if _served_version(url, record) == version})
        return set(pending)

    poll(still_pending, lambda left: not left, max(0.0, timeout - (time.time() - since)), 0.05)
    assert not pending, f"replicas {sorted(pending)} still not serving v{version} after {timeout} s"
    return time.time() - since


@pytest.fixture(scope="module")
def team_serving(bento: dict, tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """moto's S3 server, the routing document naming v7, three replicas on their own stores, the front."""
    root = tmp_path_factory.mktemp("replicas")
    keys = root / "keys"
    for name in ("deploy", "other"):
        signing.generate_key_pair(keys / f"{name}.key", keys / f"{name}.pub")
    with team.s3(root / "s3", BUCKET) as store:
        endpoint = store.url
        store_env = team.s3_env(endpoint)
        writer_env = {**os.environ, **store_env, "BENTOML_HOME": str(bento["home"]), "BENTOML_DO_NOT_TRACK": "true",
                      routing.SIGNING_KEY_ENV_VAR: str(keys / "deploy.key")}
        _write_routing(writer_env, routing.champion_only("adult-income", tags["7"], "7", 0.0))
        processes, urls = [], []
        try:
            for index in range(1, REPLICAS + 1):
                home = root / f"replica-{index}" / "bentoml"
                subprocess.run([sys.executable, "-m", "bentoml", "import", str(bento["archive"])],
                               env={**writer_env, "BENTOML_HOME": str(home)}, check=True, timeout=120,
                               capture_output=True)
                process, url = start_bento_server(
                    bento["tag"], home, root / f"replica-{index}.log", **store_env,
                    ROUTING_URL=ROUTING_URL, ROUTING_POLL_SECONDS=str(POLL_SECONDS),
                    ROUTING_VERIFY_KEY_FILE=str(keys / "deploy.pub"),
                    INFERENCE_LOG_URL=LOG_URL, REPLICA_ID=f"r{index}", LOG_SHIP_SECONDS="1",
                    INFERENCE_LOG_DIR=str(root / f"replica-{index}" / "inference-log"))
                processes.append(process)
                urls.append(url)
            for process, url in zip(processes, urls, strict=True):
                wait_ready(url, process)
            with haproxy_front(urls, root / "front", FRONT_CHECK_INTER="500ms") as front:
                yield {"front": front, "replicas": urls, "root": root, "endpoint": endpoint, "store": store,
                       "store_env": store_env, "keys": keys,
                       "writer_env": writer_env, "processes": processes, "record": bento["records"][0]}
        finally:
            for process in processes:
                stop_server(process)


@pytest.fixture
def store_client(team_serving: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's object-store client pointed at the test's store."""
    for key, value in team_serving["store_env"].items():
        monkeypatch.setenv(key, value)
    objectstore._client.cache_clear()
    yield
    objectstore._client.cache_clear()


def test_promotion_and_rollback_reach_every_replica_under_load(team_serving: dict, tags: dict[str, str]) -> None:
    """v8 promoted, then rolled back to v7, under load through the front: every replica follows
    the shared document within the bound, fetching v8 from the store, and no request fails."""
    serving, record = team_serving, team_serving["record"]
    _until_all_serve(serving["replicas"], record, "7", time.time(), 5.0)
    with loading(serving["front"], record) as load:
        time.sleep(2.0)
        written = _write_routing(serving["writer_env"], routing.champion_only("adult-income", tags["8"], "8", 0.0))
        promotion_s = _until_all_serve(serving["replicas"], record, "8", written, SWITCH_BOUND_S)
        time.sleep(1.0)
        written = _write_routing(serving["writer_env"], routing.champion_only("adult-income", tags["7"], "7", 0.0))
        rollback_s = _until_all_serve(serving["replicas"], record, "7", written, SWITCH_BOUND_S)
        time.sleep(1.0)
    answers = [a for thread in load for a in thread.answers]
    failures = [a for thread in load for a in thread.failures()]
    logger.warning("replicas: every one of %d replicas served the promoted v8 at most %.2f s after the routing "
                   "document was written (v8 fetched from the store), the rolled-back v7 at most %.2f s after; "
                   "poll %.1f s; %d requests through the front meanwhile, %d failed", REPLICAS, promotion_s,
                   rollback_s, POLL_SECONDS, len(answers), len(failures))
    assert failures == []
    assert {a[2] for a in answers} == {"7", "8"}
    for index in range(1, REPLICAS + 1):  # v8 came from the object store, not from a shared disk
        log = (serving["root"] / f"replica-{index}.log").read_text(encoding="utf-8", errors="replace")
        assert f"model {tags['8']} not in the local store: fetching it from {ROUTING_URL}" in log


def test_every_replicas_inference_log_reaches_the_store(team_serving: dict, store_client: None,
                                                        bento: dict) -> None:
    """Requests spread over the replicas; each replica's entries arrive under its own prefix,
    the monitoring jobs' reader sees every answered record exactly once, and the drift job reads them all."""
    serving, record = team_serving, team_serving["record"]
    with loading(serving["front"], record) as load:
        time.sleep(3.0)
    ids = {a[3] for thread in load for a in thread.answers if a[1] == 200}
    assert len(ids) > 50

    def shipped() -> set[str]:
        frame = read_log(LOG_URL)
        return set(frame["request_id"]) & ids

    poll(shipped, lambda found: found == ids, 15, 0.5)
    frame = read_log(LOG_URL)
    mine = frame[frame["request_id"].isin(ids)]
    assert set(mine["request_id"]) == ids
    assert not mine.duplicated(["request_id", "record_index"]).any()
    keys = team.objects(serving["endpoint"], BUCKET, "inference-log/")
    assert {key.split("/")[1] for key in keys} == {f"r{i}" for i in range(1, REPLICAS + 1)}

    reference = serving["root"] / "reference.parquet"  # the drift job, as cron runs it, on every replica's log
    bento["test"].to_parquet(reference)
    drift = subprocess.run([sys.executable, "-m", "mlops_template", "drift", "--reference", str(reference),
                            "--report-dir", str(serving["root"] / "reports"), "--last-n", "1000000"],
                           env={**os.environ, **serving["store_env"], "INFERENCE_LOG_URL": LOG_URL}, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert drift.returncode in (ExitCode.OK, ExitCode.ALERT), drift.stdout + drift.stderr
    assert f" {len(read_log(LOG_URL))} records;" in drift.stdout, drift.stdout


def _replica_log(serving: dict, index: int) -> str:
    return (serving["root"] / f"replica-{index}.log").read_text(encoding="utf-8", errors="replace")


def test_a_store_outage_costs_no_request_and_the_log_catches_up(team_serving: dict, tags: dict[str, str],
                                                                store_client: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The object store is stopped for real under load: every replica keeps serving and stays
    ready, says so once, and what it answered meanwhile reaches the store once it is back."""
    serving, record, store = team_serving, team_serving["record"], team_serving["store"]
    logged_before = {i: len(_replica_log(serving, i)) for i in range(1, REPLICAS + 1)}
    with loading(serving["front"], record) as load:
        time.sleep(1.0)
        store.stop()
        outage = time.monotonic()
        time.sleep(6.0)  # several routing polls and shipping rounds
        ready = [requests.get(f"{url}/readyz", timeout=5).status_code for url in serving["replicas"]]
        monkeypatch.setenv(routing.URL_ENV_VAR, ROUTING_URL)
        preflight_started = time.monotonic()
        down = shared_services_down({"tracking_uri": "sqlite:///unused.db", "experiment": "unused"})
        preflight_s = time.monotonic() - preflight_started
        back = time.monotonic()
        store.start()  # moto comes back empty: the deploy job publishes the routing again
        _write_routing(serving["writer_env"], routing.champion_only("adult-income", tags["7"], "7", 0.0))
        time.sleep(1.0)
    answers = [a for thread in load for a in thread.answers]
    during = {a[3] for a in answers if outage <= a[0] <= back and a[1] == 200}
    assert [a for a in answers if a[1] != 200] == []
    assert ready == [200] * REPLICAS
    assert down is not None and "object store" in down and preflight_s < 15, (down, preflight_s)
    assert len(during) > 20

    # the shipper's back-off reached a few seconds during the outage
    poll(lambda: set(read_log(LOG_URL)["request_id"]), lambda logged: during <= logged, 60, 1.0)
    caught_up = time.monotonic() - back
    assert during <= set(read_log(LOG_URL)["request_id"])
    for index in range(1, REPLICAS + 1):
        log = _replica_log(serving, index)[logged_before[index]:]
        assert log.count(f"routing document {ROUTING_URL} unreachable") == 1, log[-3000:]
        assert log.count("shipping to s3://") == 2  # paused once, resumed once
    logger.warning("replicas: %d requests answered while the store was down (%.1f s), 0 failed; their log "
                   "entries were all in the store %.1f s after it came back; preflight said 'down' in %.1f s",
                   len(during), back - outage, caught_up, preflight_s)


# Writes an untrusted routing document into the store, as an attacker with write access to it (or
# a writer with another key) would; prints the tag the document names and when it was written.
UNTRUSTED_CODE = """
import io, json, shutil, sys, tarfile, tempfile, time
from pathlib import Path
import bentoml
from mlops_template.core import objectstore, signing
from mlops_template.serving import archives, routing
mode, url, v7, v8, other_key = sys.argv[1:6]

def recorded(tag):
    return bentoml.models.get(tag).info.metadata["sha256"]

def document(tag, version, model_sha256, archive_sha256):
    doc = routing.champion_only("adult-income", tag, version, 0.0, model_sha256)
    doc["champion"]["archive_sha256"] = archive_sha256
    return doc

def tamper(key):
    # the published archive re-uploaded with another model: threshold 0 and version 666
    with tempfile.TemporaryDirectory() as folder:
        genuine, tampered = Path(folder) / "genuine.bentomodel", Path(folder) / "tampered.bentomodel"
        objectstore.download_file(key, genuine)
        with tarfile.open(genuine) as source, tarfile.open(tampered, "w:xz") as target:
            for member in source.getmembers():
                data = source.extractfile(member).read() if member.isfile() else None
                if member.name.endswith("serving.json"):
                    data = json.dumps({**json.loads(data), "threshold": 0.0, "model_version": "666"}).encode()
                    member.size = len(data)
                target.addfile(member, io.BytesIO(data) if data is not None else None)
        objectstore.upload_file(tampered, key)

tag = v8
if mode == "archive_sha256":  # a model no replica holds yet, published genuinely, then its archive replaced
    source = bentoml.models.get(v8)
    with bentoml.models.create("adult-income", labels=dict(source.info.labels),
                               metadata=dict(source.info.metadata)) as copy:
        for item in Path(source.path).iterdir():
            if item.is_file() and item.name != "model.yaml":
                shutil.copy2(item, Path(copy.path) / item.name)
    tag = str(copy.tag)
    digest = archives.publish(url, tag, recorded(tag))
    tamper(archives.archive_url(url, tag))
    doc = signing.sign(document(tag, "10", recorded(tag), digest), routing.signing_key_from_env())
else:
    digest = archives.publish(url, v8, recorded(v8))
    doc = document(v8, "8", recorded(v7 if mode == "model_sha256" else v8), digest)
    if mode == "bad_signature":
        doc = signing.sign(doc, signing.load_private_key(other_key))
    elif mode == "model_sha256":
        doc = signing.sign(doc, routing.signing_key_from_env())
objectstore.put_bytes(objectstore.ObjectUrl.parse(url), json.dumps(doc).encode())
print(tag, time.time())
"""


def _refusals(url: str, reason: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    prefix = f'model_routing_refused_total{{reason="{reason}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def _routing_refused(url: str) -> dict | None:
    answer = requests.get(f"{url}/readyz", timeout=10)
    if answer.status_code != 200 or not answer.headers.get("content-type", "").startswith("application/json"):
        return None
    return answer.json().get("routing_refused")


def test_untrusted_routing_is_refused_by_every_replica_under_load(team_serving: dict, tags: dict[str, str]) -> None:
    """Through the front under load: an unsigned document, one signed with another key, one whose
    model_sha256 is another model's, and a genuine signed document whose archive was replaced in
    the store are each refused by every replica (reason on /readyz and in the metric, logged once);
    v7 answers every request and the tampered archive never reaches a replica's store."""
    serving, record = team_serving, team_serving["record"]
    _write_routing(serving["writer_env"], routing.champion_only("adult-income", tags["7"], "7", 0.0))
    _until_all_serve(serving["replicas"], record, "7", time.time(), SWITCH_BOUND_S)
    seen: dict[str, float] = {}
    tampered_tag = ""
    with loading(serving["front"], record) as load:
        for reason in ("unsigned", "bad_signature", "model_sha256", "archive_sha256"):
            before = {url: _refusals(url, reason) for url in serving["replicas"]}
            done = subprocess.run([sys.executable, "-c", UNTRUSTED_CODE, reason, ROUTING_URL, tags["7"], tags["8"],
                                   str(serving["keys"] / "other.key")], env=serving["writer_env"], cwd=REPO,
                                  check=True, timeout=300, capture_output=True, text=True)
            tag, written = done.stdout.split()[-2], float(done.stdout.split()[-1])
            if reason == "archive_sha256":
                tampered_tag = tag

            def not_refused(reason: str = reason, before: dict = before) -> set[str]:
                return {url for url in serving["replicas"] if _refusals(url, reason) < before[url] + 1
                        or (_routing_refused(url) or {}).get("reason") != reason}

            pending = poll(not_refused, lambda left: not left, SWITCH_BOUND_S, 0.1)
            assert not pending, f"{reason}: replicas {sorted(pending)} did not refuse within {SWITCH_BOUND_S} s"
            seen[reason] = time.time() - written
            time.sleep(2 * POLL_SECONDS)  # more polls: still refused once, still v7
            assert all(_refusals(url, reason) == before[url] + 1 for url in serving["replicas"]), reason
    answers = [a for thread in load for a in thread.answers]
    assert [a for a in answers if a[1] != 200] == []
    assert {a[2] for a in answers} == {"7"}
    name, _, version = tampered_tag.partition(":")
    for index in range(1, REPLICAS + 1):
        assert not (serving["root"] / f"replica-{index}" / "bentoml" / "models" / name / version).exists()
        log = _replica_log(serving, index)
        for reason in seen:
            assert log.count(f"refused ({reason}:") == 1, (reason, log[-3000:])
    _write_routing(serving["writer_env"], routing.champion_only("adult-income", tags["7"], "7", 0.0))
    poll(lambda: any(_routing_refused(url) for url in serving["replicas"]), lambda refused: not refused,
         SWITCH_BOUND_S, 0.2)
    assert not any(_routing_refused(url) for url in serving["replicas"])
    logger.warning("replicas: %d requests through the front while 4 untrusted routing documents were written, "
                   "0 failed, all v7; every replica refused each within %s s", len(answers),
                   ", ".join(f"{reason} {s:.2f}" for reason, s in seen.items()))
