"""Team mode's intake: ``mlops-template incoming list|fetch`` against moto's S3 server, for real.

Each test runs the real command in a scratch folder holding a copy of params.yaml (so the
working tree's ``data/incoming`` is never touched), with ``INCOMING_URL`` on a prefix of its own.
The attacks: keys that try to leave the incoming folder or are not plain batch names, an object
too large, a local file of the same name, an object rewritten between its download and its delete,
and a store that does not answer.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlops_template.core import objectstore
from mlops_template.core.exitcodes import ExitCode
from mlops_template.ops import incoming
from tests.support import team
from tests.support.servers import REPO, clean_env, free_port

BUCKET = "team-incoming"
CSV = b"age,income\n39,<=50K\n50,>50K\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with team.s3(tmp_path_factory.mktemp("s3"), BUCKET) as part:
        yield part.url


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder with the repository's params.yaml, limit lowered to 4 KiB: where the command runs."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["max_batch_bytes"] = 4096
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return work


def put(endpoint: str, key: str, body: bytes) -> None:
    team.client(endpoint).put_object(Bucket=BUCKET, Key=key, Body=body)


def body(endpoint: str, key: str) -> bytes:
    return team.client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def command(work: Path, endpoint: str, prefix: str, *words: str) -> subprocess.CompletedProcess:
    env = clean_env({**team.s3_env(endpoint), "INCOMING_URL": f"s3://{BUCKET}/{prefix}"}, drop=("INCOMING_",))
    return subprocess.run([sys.executable, "-m", "mlops_template", "incoming", *words], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative), the lock files (``.dvc/tmp/*.lock``) left out."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not (p.parent.name == "tmp" and p.suffix == ".lock"))


def test_fetch_moves_each_batch_and_deletes_its_object(store: str, scratch: Path) -> None:
    put(store, "moves/2026-12-04-a.csv", CSV)
    put(store, "moves/2026-12-04-b.csv.gz", b"\x1f\x8b" + CSV)

    listed = command(scratch, store, "moves", "list")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout.strip().splitlines()[-1])
    assert sorted(shown) == ["2026-12-04-a.csv", "2026-12-04-b.csv.gz"]
    assert shown["2026-12-04-a.csv"][0] == len(CSV) and shown["2026-12-04-a.csv"][1].strip('"')

    done = command(scratch, store, "moves", "fetch")

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["fetched"] == ["2026-12-04-a.csv", "2026-12-04-b.csv.gz"], summary
    folder = scratch / "data/incoming"
    assert (folder / "2026-12-04-a.csv").read_bytes() == CSV
    assert (folder / "2026-12-04-b.csv.gz").read_bytes() == b"\x1f\x8b" + CSV
    assert files_under(scratch) == ["data/incoming/2026-12-04-a.csv", "data/incoming/2026-12-04-b.csv.gz",
                                    "params.yaml"]  # no temporary file left behind
    assert team.objects(store, BUCKET, "moves/") == []
    again = command(scratch, store, "moves", "list")
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.parametrize("local", [b"age,income\n1,2\n", b"age,income\n11,<=50Z\n50,>50K\n"],
                         ids=["other-size", "same-size"])
def test_a_local_file_of_the_same_name_is_never_overwritten(store: str, scratch: Path, local: bytes) -> None:
    prefix = f"collide-{len(local)}"
    put(store, f"{prefix}/batch.csv", CSV)
    folder = scratch / "data/incoming"
    folder.mkdir(parents=True)
    (folder / "batch.csv").write_bytes(local)

    done = command(scratch, store, prefix, "fetch")

    assert done.returncode == 0, done.stderr
    assert (folder / "batch.csv").read_bytes() == local
    assert team.objects(store, BUCKET, f"{prefix}/") == [f"{prefix}/batch.csv"]
    assert "a different file named batch.csv is already in data/incoming" in done.stderr, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["fetched"] == []
    assert files_under(scratch) == ["data/incoming/batch.csv", "params.yaml"]


def test_an_identical_local_copy_counts_as_fetched(store: str, scratch: Path) -> None:
    put(store, "twice/batch.csv", CSV)  # an earlier fetch died between its link and its delete
    folder = scratch / "data/incoming"
    folder.mkdir(parents=True)
    (folder / "batch.csv").write_bytes(CSV)

    done = command(scratch, store, "twice", "fetch")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["fetched"] == ["batch.csv"]
    assert team.objects(store, BUCKET, "twice/") == []


HOSTILE = ["../escape.csv", "..", "sub/../escape.csv", "sub/nested.csv", "..\\escape.csv", "/escape.csv",
           ".hidden.csv", "-dash.csv", "name with space.csv", "x.csv.exe", "x.parquet", "%2e%2e/escape.csv",
           "big.csv"]  # big.csv: above the 4 KiB limit


@pytest.mark.parametrize("name", HOSTILE)
def test_keys_that_are_not_plain_batch_names_stay_in_the_bucket(store: str, scratch: Path, tmp_path: Path,
                                                                name: str) -> None:
    prefix = f"hostile-{HOSTILE.index(name)}"
    put(store, f"{prefix}/{name}", CSV * 200 if name == "big.csv" else CSV)
    put(store, f"{prefix}/good.csv", CSV)
    before = files_under(tmp_path)

    listed = command(scratch, store, prefix, "list")
    done = command(scratch, store, prefix, "fetch")

    assert listed.returncode == 0 and done.returncode == 0, done.stderr
    assert json.loads(listed.stdout.strip().splitlines()[-1]).keys() == {"good.csv"}
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["fetched"] == ["good.csv"]
    assert [r["key"] for r in summary["refused"]] == [f"{prefix}/{name}"]
    assert files_under(tmp_path) == sorted([*before, "work/data/incoming/good.csv"])  # nothing else, anywhere
    assert team.objects(store, BUCKET, f"{prefix}/") == [f"{prefix}/{name}"]
    assert f"refused s3://{BUCKET}/{f'{prefix}/{name}'!r}" in done.stderr and "left in the bucket" in done.stderr


def test_an_object_rewritten_between_download_and_delete_stays(store: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with a hook that rewrites the object just before the fetch's delete call goes out."""
    for name, value in team.s3_env(store).items():
        monkeypatch.setenv(name, value)
    objectstore._client.cache_clear()
    monkeypatch.chdir(tmp_path)
    put(store, "race/batch.csv", CSV)
    real_delete = objectstore.delete
    newer = CSV + b"41,>50K\n"

    def rewritten_first(url, if_match=None):
        put(store, "race/batch.csv", newer)  # a writer replaces the batch at the worst moment
        return real_delete(url, if_match=if_match)

    monkeypatch.setattr(objectstore, "delete", rewritten_first)
    try:
        report = incoming.fetch(objectstore.ObjectUrl(BUCKET, "race"), tmp_path / "in", 4096)
    finally:
        objectstore._client.cache_clear()

    assert (tmp_path / "in/batch.csv").read_bytes() == CSV  # the old content is safe locally
    assert body(store, "race/batch.csv") == newer  # and the new one was not deleted unseen
    assert report.fetched == [] and [e["name"] for e in report.left] == ["batch.csv"], report


def test_a_store_that_does_not_answer_exits_69_and_changes_nothing(store: str, scratch: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    put(store, "down/batch.csv", CSV)

    done = command(scratch, down, "down", "fetch")
    listed = command(scratch, down, "down", "list")

    assert done.returncode == listed.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert "error:" in done.stderr and "list_objects_v2" in done.stderr, done.stderr
    assert files_under(scratch) == ["params.yaml"] and not (scratch / "data").exists()
    assert team.objects(store, BUCKET, "down/") == ["down/batch.csv"]


def test_without_a_prefix_the_command_says_what_to_set(scratch: Path) -> None:
    env = clean_env(drop=("INCOMING_",))
    done = subprocess.run([sys.executable, "-m", "mlops_template", "incoming", "fetch"], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.BAD_INPUT
    assert "INCOMING_URL" in done.stderr
    assert files_under(scratch) == ["params.yaml"] and not (scratch / "data").exists()


def retrain_in(work: Path, endpoint: str, prefix: str) -> subprocess.CompletedProcess:
    env = clean_env({**team.s3_env(endpoint), "INCOMING_URL": f"s3://{BUCKET}/{prefix}"}, drop=("INCOMING_",))
    return subprocess.run([sys.executable, "-m", "mlops_template", "retrain"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


def test_retrain_fetches_first_and_guards_what_it_fetched(store: str, scratch: Path) -> None:
    """``retrain`` (as cron runs it) takes the bucket's batch before its guard: too small, it is
    quarantined (exit 2) before any ``dvc repro``, which keeps this test to seconds."""
    for relative in ("contracts/adult.yaml", "data/raw/adult.csv.gz"):
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / relative, scratch / relative)
    with gzip.open(REPO / "data/raw/adult.csv.gz", "rb") as raw:
        tiny = b"".join(raw.readline() for _ in range(21))  # the header and 20 rows: under ingest.min_rows
    put(store, "retrain/2026-12-04-tiny.csv", tiny)

    done = retrain_in(scratch, store, "retrain")

    assert done.returncode == ExitCode.QUARANTINED, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["fetch"]["fetched"] == ["2026-12-04-tiny.csv"], summary
    assert [q["batch"] for q in summary["quarantined"]] == ["2026-12-04-tiny.csv"], summary
    assert (scratch / "data/quarantine/batches/2026-12-04-tiny.csv").read_bytes() == tiny
    assert team.objects(store, BUCKET, "retrain/") == []


def test_retrain_with_the_store_down_exits_69_and_changes_nothing(scratch: Path) -> None:
    done = retrain_in(scratch, f"http://127.0.0.1:{free_port()}", "retrain-down")

    assert done.returncode == ExitCode.UNAVAILABLE, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["status"] == "unavailable"
    assert files_under(scratch) == ["params.yaml"] and not (scratch / "data").exists()
