"""Routing documents the service must not follow, against real ``bentoml serve`` processes, and
model archives that must not be published over.

One machine: a routing file naming a model whose ``model_sha256`` differs from the model's file
is refused; with ``ROUTING_VERIFY_KEY_FILE`` an unsigned file or one signed with another key is
refused too, at start-up (the pinned model serves) and on reload. Each refusal keeps the current
model serving with no failed request, is counted in ``model_routing_refused_total{reason}``, is
logged once and shows on ``/readyz`` (still 200) as ``routing_refused``.

Publishing (moto's S3 server, the session's BentoML store in a child process): the same model is
reused, a key holding a different model is refused naming the key, and a local model whose file
differs from its record is not published. Team-mode refusals by replicas behind the front are in
``test_replicas.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlops_template.core import signing
from mlops_template.serving import routing
from tests.support import team
from tests.support.servers import REPO
from tests.support.waiting import wait_until

POLL_SECONDS = 0.5
REFUSAL_BOUND_S = 20.0


def _recorded(bento: dict, tag: str) -> str:
    """The model file's sha256 packaging recorded for ``tag`` (what deploy writes into the document)."""
    name, _, version = tag.partition(":")
    info = Path(bento["home"]) / "models" / name / version / "model.yaml"
    return yaml.safe_load(info.read_text(encoding="utf-8"))["metadata"]["sha256"]


def _sample(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _refused(url: str) -> dict | None:
    """``/readyz``'s ``routing_refused`` (asserting the service is ready), or None."""
    answer = requests.get(f"{url}/readyz", timeout=10)
    assert answer.status_code == 200, answer.text
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return None
    body = answer.json()
    assert body["ready"] is True
    return body.get("routing_refused")


def _served(url: str, record: dict) -> str:
    answer = requests.post(f"{url}/predict", json={"records": [record]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()[0]["model_version"]


@contextlib.contextmanager
def _load(url: str, record: dict, threads: int = 2) -> Iterator[list[tuple[int, str | None]]]:
    """Keep single-record requests going while the block runs; yield the answers (status, version)."""
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def run() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
                    version = answer.json()[0]["model_version"] if answer.status_code == 200 else None
                    answers.append((answer.status_code, version))
                except requests.RequestException:
                    answers.append((0, None))

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield answers
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)


def _until(condition: Callable[[], bool], what: str, timeout: float = REFUSAL_BOUND_S) -> None:
    wait_until(condition, timeout, 0.2, what)


def test_a_routing_file_naming_a_model_whose_digest_differs_is_refused(
        start_server: Callable, bento: dict, tags: dict[str, str], tmp_path: Path) -> None:
    """v8 named with another model's sha256 (its own store's checksum file agrees with its file):
    v7 keeps answering every request; a correct document then switches to v8."""
    path, record = tmp_path / "routing.json", bento["records"][0]
    routing.write_routing(path, routing.champion_only("adult-income", tags["7"], "7", 0.0, _recorded(bento, tags["7"])))
    with start_server("trust-digest", ROUTING_FILE=str(path), ROUTING_POLL_SECONDS=str(POLL_SECONDS)) as url:
        with _load(url, record) as answers:
            time.sleep(1.0)
            routing.write_routing(path, routing.champion_only("adult-income", tags["8"], "8", 0.0,
                                                              _recorded(bento, tags["7"])))
            _until(lambda: _sample(url, "model_routing_refused_total", reason="model_sha256") >= 1,
                   "the refusal counted")
            time.sleep(4 * POLL_SECONDS)  # polls meanwhile: the refused document is not retried
        refused = _refused(url)
        counted = _sample(url, "model_routing_refused_total", reason="model_sha256")
        routing.write_routing(path, routing.champion_only("adult-income", tags["8"], "8", 0.0,
                                                          _recorded(bento, tags["8"])))
        _until(lambda: _served(url, record) == "8", "the correct document followed")
        cleared = _refused(url)
    log = (Path(bento["root"]) / "serve-trust-digest.log").read_text(encoding="utf-8", errors="replace")
    assert answers and [a for a in answers if a != (200, "7")] == []
    assert counted == 1
    assert refused is not None and refused["reason"] == "model_sha256" and tags["8"] in refused["detail"], refused
    assert cleared is None
    assert log.count("refused (model_sha256") == 1, log[-3000:]


def test_with_a_verify_key_only_the_deploy_keys_documents_are_followed(
        start_server: Callable, bento: dict, tags: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed with another key at start-up: the pinned v7 serves, ready, saying why. An unsigned
    document: refused. Signed with the deploy key: followed."""
    keys = tmp_path / "keys"
    for name in ("deploy", "other"):
        signing.generate_key_pair(keys / f"{name}.key", keys / f"{name}.pub")
    path, record = tmp_path / "routing.json", bento["records"][0]
    v8 = routing.champion_only("adult-income", tags["8"], "8", 0.0, _recorded(bento, tags["8"]))
    monkeypatch.setenv(routing.SIGNING_KEY_ENV_VAR, str(keys / "other.key"))
    routing.write_routing(path, v8)
    with start_server("trust-keys", ROUTING_FILE=str(path), ROUTING_POLL_SECONDS=str(POLL_SECONDS),
                      ROUTING_VERIFY_KEY_FILE=str(keys / "deploy.pub")) as url:
        at_start = (_served(url, record), _refused(url))
        with _load(url, record) as answers:
            monkeypatch.delenv(routing.SIGNING_KEY_ENV_VAR)
            routing.write_routing(path, {**v8, "updated_at": "2026-12-01T00:00:00+00:00"})
            _until(lambda: _sample(url, "model_routing_refused_total", reason="unsigned") >= 1, "unsigned refused")
            unsigned = _refused(url)
        monkeypatch.setenv(routing.SIGNING_KEY_ENV_VAR, str(keys / "deploy.key"))
        routing.write_routing(path, v8)
        _until(lambda: _served(url, record) == "8", "the deploy key's document followed")
        counts = {reason: _sample(url, "model_routing_refused_total", reason=reason)
                  for reason in routing.REFUSAL_REASONS}
        cleared = _refused(url)
    log = (Path(bento["root"]) / "serve-trust-keys.log").read_text(encoding="utf-8", errors="replace")
    assert at_start[0] == "7" and at_start[1] is not None and at_start[1]["reason"] == "bad_signature", at_start
    assert "refused at startup (bad_signature" in log and "serving the pinned model" in log, log[-3000:]
    assert answers and [a for a in answers if a != (200, "7")] == []
    assert unsigned is not None and unsigned["reason"] == "unsigned", unsigned
    assert counts == {"unsigned": 1, "bad_signature": 1, "no_digest": 0, "model_sha256": 0, "archive_sha256": 0}
    assert cleared is None


PUBLISH_CODE = """
import json, sys
from mlops_template.serving import archives
url, tag, recorded = sys.argv[1], sys.argv[2], sys.argv[3] or None
try:
    print(json.dumps({"digest": archives.publish(url, tag, recorded)}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_publishing_reuses_the_same_model_and_refuses_a_key_that_holds_another(
        bento: dict, tags: dict[str, str], tmp_path: Path) -> None:
    """Published twice (and from a second store holding the same model): one upload, one digest.
    A key holding another model's archive: an error naming the key, the object left as it was.
    A local model whose file differs from its record: not published."""
    bucket, routing_url = "publish", "s3://publish/serving/routing.json"
    with team.s3(tmp_path / "s3", bucket) as store:
        store_env = team.s3_env(store.url)
        client = team.client(store.url)

        def publish(tag: str, recorded: str = "", home: Path = Path(bento["home"])) -> dict:
            env = {**os.environ, **store_env, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
            done = subprocess.run([sys.executable, "-c", PUBLISH_CODE, routing_url, tag, recorded], env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=300, check=True)
            return json.loads(done.stdout.strip().splitlines()[-1])

        def key_of(tag: str) -> str:
            name, _, version = tag.partition(":")
            return f"serving/models/{name}/{version}.bentomodel"

        def etag(tag: str) -> str:
            return client.head_object(Bucket=bucket, Key=key_of(tag))["ETag"]

        first = publish(tags["8"], _recorded(bento, tags["8"]))
        uploaded = etag(tags["8"])
        again = publish(tags["8"])
        other_home = tmp_path / "other-store"  # the same model, imported into another store and exported from there
        client.download_file(bucket, key_of(tags["8"]), str(tmp_path / "v8.bentomodel"))
        subprocess.run([sys.executable, "-m", "bentoml", "models", "import", str(tmp_path / "v8.bentomodel")],
                       env={**os.environ, "BENTOML_HOME": str(other_home), "BENTOML_DO_NOT_TRACK": "true"},
                       check=True, capture_output=True, timeout=120)
        from_elsewhere = publish(tags["8"], "", other_home)
        kept = etag(tags["8"])

        publish(tags["7"])  # another model's archive, then copied over v8's key
        client.copy_object(Bucket=bucket, Key=key_of(tags["8"]),
                           CopySource={"Bucket": bucket, "Key": key_of(tags["7"])})
        planted = etag(tags["8"])
        conflict = publish(tags["8"], _recorded(bento, tags["8"]))
        after_conflict = etag(tags["8"])

        altered = publish(tags["9"], _recorded(bento, tags["9"]))  # v9's stored file was altered after packaging
        v9_published = bool(team.objects(store.url, bucket, key_of(tags["9"])))

    assert "digest" in first and again == first and from_elsewhere == first, (first, again, from_elsewhere)
    assert kept == uploaded
    assert conflict.get("error") == "PublishConflict", conflict
    assert f"s3://{bucket}/{key_of(tags['8'])}" in conflict["message"] and "refusing" in conflict["message"]
    assert after_conflict == planted
    assert altered.get("error") == "RoutingError" and "refusing to publish" in altered["message"], altered
    assert not v9_published
