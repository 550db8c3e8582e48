"""The team-mode object-store pieces in process: settings, routing in the store, log shipping.

moto's in-process S3 (``mock_aws``) stands in for the store here; the integration tier runs the
same code against moto's real server with replicas behind HAProxy (``test_replicas.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlops_template.core import objectstore
from mlops_template.serving import routing
from mlops_template.serving.inference_log import InferenceLog, read_log
from mlops_template.serving.log_shipping import LogShipper
from mlops_template.serving.settings import ServingSettings

BUCKET = "team"


def test_urls_split_and_compose() -> None:
    url = objectstore.ObjectUrl.parse("s3://bucket/serving/routing.json")
    assert (url.bucket, url.key) == ("bucket", "serving/routing.json")
    assert str(url.sibling("models", "m", "v.bentomodel")) == "s3://bucket/serving/models/m/v.bentomodel"
    assert str(objectstore.ObjectUrl.parse("s3://bucket").child("a/", "b")) == "s3://bucket/a/b"
    with pytest.raises(ValueError, match="not an s3"):
        objectstore.ObjectUrl.parse("/tmp/routing.json")


def test_team_settings_are_read_and_checked() -> None:
    settings = ServingSettings.from_env({"ROUTING_URL": "s3://b/r.json", "ROUTING_FILE": "/tmp/r.json",
                                         "INFERENCE_LOG_URL": "s3://b/log", "REPLICA_ID": "web-1"})
    assert settings.routing_location == "s3://b/r.json"  # the shared document wins over a local file
    assert (settings.inference_log_url, settings.replica_id) == ("s3://b/log", "web-1")
    assert ServingSettings.from_env({"ROUTING_FILE": "/tmp/r.json"}).routing_location == Path("/tmp/r.json")
    with pytest.raises(ValueError, match="INFERENCE_LOG_URL"):
        ServingSettings.from_env({"INFERENCE_LOG_URL": "/var/log/x"})
    with pytest.raises(ValueError, match="REPLICA_ID"):
        ServingSettings.from_env({"REPLICA_ID": "../escape"})


def test_routing_document_in_the_store_changes_its_signature(store: None) -> None:
    url = f"s3://{BUCKET}/serving/routing.json"
    assert routing.document_signature(url) is None
    with pytest.raises(FileNotFoundError):
        routing.read_routing(url)
    document = routing.champion_only("m", "m:abc", "1", 0.0)
    objectstore.put_bytes(objectstore.ObjectUrl.parse(url), json.dumps(document).encode())
    first = routing.document_signature(url)
    assert routing.read_routing(url) == document
    objectstore.put_bytes(objectstore.ObjectUrl.parse(url), json.dumps({**document, "canary_share": 0.5}).encode())
    assert routing.document_signature(url) not in (None, first)


def test_an_unreachable_store_is_not_a_missing_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    objectstore._client.cache_clear()
    try:
        with pytest.raises(objectstore.StoreUnavailable):
            routing.document_signature("s3://bucket/routing.json")
    finally:
        objectstore._client.cache_clear()


def _log_entries(log: InferenceLog, start: int, count: int) -> None:
    log.submit([{"request_id": f"r{i}", "record_index": 0, "model_version": "1", "features": {"x": i},
                 "probability": 0.5, "label": "a"} for i in range(start, start + count)])


def test_shipping_sends_each_line_once_and_resumes_after_a_restart(store: None, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/inference-log"
    with InferenceLog(tmp_path) as log:
        _log_entries(log, 0, 30)
    shipper = LogShipper(tmp_path, url, "r1", 60.0)
    assert shipper.ship_once() > 0
    assert shipper.ship_once() == 0  # nothing new
    with InferenceLog(tmp_path) as log:  # the same worker file grows
        _log_entries(log, 30, 20)
    again = LogShipper(tmp_path, url, "r1", 60.0)
    again._offsets[os.getpid()] = again._load_state(os.getpid())  # a restarted worker, from its state file
    assert again.ship_once() > 0
    frame = read_log(url)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(50))
    keys = [key for key, _ in objectstore.list_objects(objectstore.ObjectUrl.parse(url))]
    assert len(keys) == 2 and all(key.startswith("inference-log/r1/") for key in keys)


def test_lines_rotated_away_while_the_store_is_down_are_counted(store: None, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lost: list[int] = []
    url = f"s3://{BUCKET}/log"
    shipper = LogShipper(tmp_path, url, "r1", 60.0, on_lost=lost.append)
    with InferenceLog(tmp_path, max_bytes=3_000, backup_count=0) as log:
        _log_entries(log, 0, 5)
        log.close()
        waiting = log.path.stat().st_size
        put = objectstore.put_bytes

        def store_down(*args: object) -> None:
            raise objectstore.StoreUnavailable("put: connection refused")

        monkeypatch.setattr(objectstore, "put_bytes", store_down)
        with pytest.raises(objectstore.StoreUnavailable):
            shipper.ship_once()
    with InferenceLog(tmp_path, max_bytes=3_000, backup_count=0) as log:
        _log_entries(log, 5, 40)  # enough to rotate: the waiting file is deleted
    monkeypatch.setattr(objectstore, "put_bytes", put)
    shipper.ship_once()
    assert lost == [waiting]
    assert "r0" not in set(read_log(url)["request_id"]) and "r44" in set(read_log(url)["request_id"])


def test_a_line_still_being_written_waits_for_its_end(store: None, tmp_path: Path) -> None:
    path = tmp_path / f"inference-{os.getpid()}.jsonl"
    path.write_bytes(b'{"ts": "2026-01-01T00:00:00+00:00", "request_id": "a"}\n{"ts": "2026-01-')
    shipper = LogShipper(tmp_path, f"s3://{BUCKET}/log", "r1", 60.0)
    shipped = shipper.ship_once()
    assert shipped == len(b'{"ts": "2026-01-01T00:00:00+00:00", "request_id": "a"}\n')


def test_the_monitoring_jobs_read_the_shipped_log_in_team_mode() -> None:
    from mlops_template.monitoring import Settings

    params = {"monitoring": {"inference_log_dir": "monitoring/inference-log"}}
    assert Settings.from_params(params, {}).inference_log_dir == Path("monitoring/inference-log")
    shipped = Settings.from_params(params, {"INFERENCE_LOG_URL": "s3://team/inference-log"})
    assert shipped.inference_log_dir == "s3://team/inference-log"
