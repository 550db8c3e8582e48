"""The transition lease and the conditional writes that keep two operators from undoing each other.

The store lease and the conditional PUTs run against moto's S3 server (a real HTTP endpoint,
started as a process); the file lease and the routing file's compare-and-replace on this disk.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_template.core import objectstore
from mlops_template.ops import lease, transitions
from mlops_template.serving import routing
from tests.support import team
from tests.support.servers import REPO, clean_env

BUCKET = "transitions"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server with :data:`BUCKET`, for the whole module."""
    with team.s3(tmp_path_factory.mktemp("s3"), BUCKET) as store:
        yield store.url


@pytest.fixture
def store(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process talks to the S3 server; yields a fresh folder URL in the bucket."""
    for key, value in team.s3_env(endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(lease.OWNER_ENV_VAR, raising=False)
    objectstore._client.cache_clear()
    yield f"s3://{BUCKET}/{time.monotonic_ns()}"
    objectstore._client.cache_clear()


def store_lease(folder: str, command: str, ttl_s: float = 30.0) -> lease.StoreLease:
    url = objectstore.ObjectUrl.parse(f"{folder}/{lease.LEASE_NAME}")
    return lease.StoreLease(url, lease.new_owner(), command, ttl_s)


def test_the_store_lease_has_one_holder_who_is_named_and_can_give_it_back(store: str) -> None:
    first, second = store_lease(store, "canary decide"), store_lease(store, "rollback")
    first.acquire()
    try:
        with pytest.raises(lease.Locked, match="canary decide") as refused:
            second.acquire()
        assert first.owner in str(refused.value)
    finally:
        first.release()
    second.acquire()  # released: the next operator gets it at once
    second.release()
    assert b'"released": true' in objectstore.get_bytes(second.url)  # released by a PUT: no delete right needed
    third = store_lease(store, "canary start")
    third.acquire()
    third.release()


def test_of_two_operators_racing_for_the_store_lease_exactly_one_wins(store: str) -> None:
    contenders = [store_lease(store, f"operator {n}") for n in range(4)]
    outcomes: dict[int, str] = {}
    start = threading.Barrier(len(contenders))

    def race(n: int) -> None:
        start.wait()
        try:
            contenders[n].acquire()
            outcomes[n] = "held"
        except lease.Locked:
            outcomes[n] = "locked"

    threads = [threading.Thread(target=race, args=(n,)) for n in range(len(contenders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(outcomes.values()) == ["held", "locked", "locked", "locked"], outcomes
    finally:
        for n, outcome in outcomes.items():
            if outcome == "held":
                contenders[n].release()


def test_a_crashed_holders_lease_expires_and_the_late_holder_learns_it_lost_it(store: str) -> None:
    crashed = store_lease(store, "retrain", ttl_s=1.0)
    crashed.acquire()
    crashed._stop.set()  # the process died: nobody renews, nobody releases
    waiting = store_lease(store, "rollback")
    with pytest.raises(lease.Locked, match="retrain"):
        waiting.acquire()  # not expired yet
    time.sleep(2.5)  # past the time to live on the store's clock (whole seconds)
    waiting.acquire()  # taken over, not blocked forever
    try:
        crashed.renew()  # the holder wakes up: its conditional renewal is refused
        with pytest.raises(lease.LeaseLost, match="taken over"):
            crashed.check()
        assert b'"command": "rollback"' in objectstore.get_bytes(waiting.url)
    finally:
        waiting.release()


def test_a_child_of_the_holder_works_under_its_store_lease_and_leaves_it_held(store: str) -> None:
    parent = store_lease(store, "retrain")
    parent.acquire()
    try:
        child = lease.StoreLease(parent.url, parent.owner, "deploy", 30.0)  # $TRANSITION_LEASE_OWNER
        child.acquire()
        assert child.inherited
        child.release()
        assert b'"command": "retrain"' in objectstore.get_bytes(parent.url)  # still the parent's
        with pytest.raises(lease.Locked):
            store_lease(store, "rollback").acquire()
    finally:
        parent.release()


def test_a_live_holder_keeps_its_lease_past_the_time_to_live_by_renewing_it(store: str) -> None:
    holder = store_lease(store, "retrain", ttl_s=1.5)
    holder.acquire()
    try:
        time.sleep(4.0)  # more than twice the time to live: renewed every 0.5 s meanwhile
        with pytest.raises(lease.Locked, match="retrain"):
            store_lease(store, "rollback").acquire()
        holder.check()
    finally:
        holder.release()


def test_the_store_refuses_a_write_on_a_stale_etag_or_over_an_existing_object(store: str) -> None:
    url = objectstore.ObjectUrl.parse(f"{store}/routing.json")
    first = objectstore.put_bytes(url, b'{"v": 1}', if_none_match=True)
    with pytest.raises(objectstore.PreconditionFailed):
        objectstore.put_bytes(url, b'{"v": 0}', if_none_match=True)  # a second "first deploy"
    second = objectstore.put_bytes(url, b'{"v": 2}', if_match=first)  # the holder's write
    with pytest.raises(objectstore.PreconditionFailed):
        objectstore.put_bytes(url, b'{"v": 1.5}', if_match=first)  # read before the holder wrote
    assert objectstore.get_bytes(url) == b'{"v": 2}'
    assert objectstore.get_versioned(url)[1] == second


def document(version: str) -> dict:
    return routing.champion_only("m", f"m:v{version}", version, 0.0, "a" * 64)


def test_a_routing_file_changed_since_it_was_read_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    routing.write_routing(path, document("1"))
    read, version = routing.read_versioned(path)
    assert read is not None and read["champion"]["model_version"] == "1"
    routing.write_routing(path, document("2"), expected=version)  # a rollback, under the lease
    with pytest.raises(routing.RoutingConflict, match="changed since it was read"):
        routing.write_routing(path, document("3"), expected=version)  # a canary that read v1
    assert routing.read_routing(path)["champion"]["model_version"] == "2"
    with pytest.raises(routing.RoutingConflict):
        routing.write_routing(tmp_path / "absent.json", document("3"), expected=version)
    routing.write_routing(tmp_path / "first.json", document("1"), expected=None)  # none yet: created
    with pytest.raises(routing.RoutingConflict):
        routing.write_routing(tmp_path / "first.json", document("2"), expected=None)
    assert routing.RoutingConflict.code == 75


HOLD = """
import sys, time
from pathlib import Path
from mlops_template.ops import lease, transitions
try:
    with lease.held(sys.argv[2], Path(sys.argv[1])) as held:
        print("held", held.owner, flush=True)
        time.sleep(float(sys.argv[3]))
except lease.Locked as exc:
    print("locked", exc, flush=True)
    sys.exit(75)
"""


def hold(lock: Path, command: str, seconds: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Another process (another operator unless ``env`` names this one's lease) holding the lease."""
    return subprocess.run([sys.executable, "-c", HOLD, str(lock), command, str(seconds)], cwd=REPO,
                          env=clean_env(env, drop=(lease.OWNER_ENV_VAR,)), capture_output=True, text=True,
                          timeout=120)


def test_the_file_lease_excludes_other_processes_and_a_child_joins_its_parents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lease.OWNER_ENV_VAR, raising=False)
    monkeypatch.delenv(routing.URL_ENV_VAR, raising=False)
    lock = tmp_path / "retrain.lock"
    with lease.held("retrain", lock) as held:
        refused = hold(lock, "rollback", 0)
        assert refused.returncode == 75 and "locked" in refused.stdout and held.owner in refused.stdout
        child = hold(lock, "deploy", 0, {lease.OWNER_ENV_VAR: held.owner})  # dvc repro's deploy stage
        assert child.returncode == 0 and f"held {held.owner}" in child.stdout, child.stderr
        with lease.held("deploy", lock) as again:  # re-entrant in one process
            assert again.owner == held.owner
        assert lock.exists()
    assert hold(lock, "rollback", 0).returncode == 0  # given back


def test_the_file_lease_dies_with_its_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lease.OWNER_ENV_VAR, raising=False)
    monkeypatch.delenv(routing.URL_ENV_VAR, raising=False)
    lock = tmp_path / "retrain.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), "retrain", "60"], cwd=REPO, env=clean_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith("held")
        assert hold(lock, "rollback", 0).returncode == 75
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert hold(lock, "rollback", 0).returncode == 0


def test_a_transition_outside_the_lease_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lease.OWNER_ENV_VAR, raising=False)
    serving = transitions.Serving(tmp_path / "routing.json", document("1"), "0" * 64)
    with pytest.raises(transitions.TransitionError, match="under the transition lease"):
        transitions.start_challenger(serving, "m", "2", "m:v2", None, 0.1, "why", {})
    assert not (tmp_path / "routing.json").exists()
