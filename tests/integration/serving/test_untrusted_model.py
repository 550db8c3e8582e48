"""A real ``bentoml serve`` on a store whose model runs code when loaded: refused, payload inert.

The attacker can write the BentoML store (a copy of the session's): the bento's ``model.skops``
is replaced by a hand-written skops file whose schema calls ``builtins.eval`` (or whose feature
spec holds an expression that writes a file), and every digest the store records for it
(the ``.sha256`` beside it, the model's metadata, the bento's ``model_sha256`` argument) is
rewritten to match, so only the type check and the expression check stand in the way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import requests
import yaml

from tests.support.hostile_models import write_hostile_model
from tests.support.servers import MAX_RECORDS, start_bento_server, stop_server
from tests.support.waiting import poll

STARTUP_SECONDS = 90.0


def _copy_store(bento: dict, destination: Path) -> Path:
    home = destination / "bentoml"
    shutil.copytree(bento["home"], home)
    return home


def _pinned_model_dir(home: Path, bento_tag: str) -> Path:
    """The stored model directory the bento pins (its ``model_tag`` argument)."""
    name, version = bento_tag.split(":")
    document = yaml.safe_load((home / "bentos" / name / version / "bento.yaml").read_text(encoding="utf-8"))
    model_name, model_version = document["args"]["model_tag"].split(":")
    return home / "models" / model_name / model_version


def _rewrite_digest(home: Path, old: str, new: str) -> int:
    """Replace a recorded digest in every text file of the store, as its writer could; the count."""
    changed = 0
    for path in home.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".sha256"):
            text = path.read_text(encoding="utf-8", errors="strict")
            if old in text:
                path.write_text(text.replace(old, new), encoding="utf-8")
                changed += 1
    return changed


def _serve_until_settled(bento: dict, home: Path, log: Path):
    """Start the server; wait until /livez answers or the process exits; return (process, url)."""
    process, url = start_bento_server(bento["tag"], home, log, MAX_RECORDS=str(MAX_RECORDS),
                                      INFERENCE_LOG="off")

    def settled() -> bool:
        if process.poll() is not None:
            return True
        try:
            return requests.get(f"{url}/livez", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    poll(settled, bool, STARTUP_SECONDS, 0.3)
    return process, url


def test_a_model_that_calls_eval_is_refused_and_never_runs(bento, tmp_path) -> None:
    home = _copy_store(bento, tmp_path)
    model_dir = _pinned_model_dir(home, bento["tag"])
    model_file = model_dir / "model.skops"
    old = hashlib.sha256(model_file.read_bytes()).hexdigest()
    marker = tmp_path / "payload-ran"
    new = write_hostile_model(model_file, "eval", marker)
    assert _rewrite_digest(home, old, new) >= 2  # the model's metadata and the bento's argument
    log = tmp_path / "serve-untrusted.log"
    process, url = _serve_until_settled(bento, home, log)
    try:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        answer = requests.get(f"{url}/readyz", timeout=10)  # answered once the load was tried
        assert not marker.exists(), "the model file's payload ran in the server"
        assert answer.status_code == 503, answer.text
        reason = answer.json()["reason"]
        assert "untrusted types" in reason, reason
        refused = requests.post(f"{url}/predict", json={"records": bento["records"][:1]}, timeout=10)
        assert refused.status_code == 503, refused.text
    finally:
        stop_server(process)
    text = log.read_text(errors="replace")
    assert "builtins.eval" in text, text[-3000:]
    assert not marker.exists(), "the model file's payload ran in the server"


def test_a_feature_spec_that_runs_a_command_never_runs(bento, tmp_path) -> None:
    """A derived expression that pandas' python engine would run stops the model, not the host."""
    home = _copy_store(bento, tmp_path)
    spec_file = _pinned_model_dir(home, bento["tag"]) / "feature_spec.json"
    marker = tmp_path / "expression-ran"
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    name = next(iter(spec["derived"]))
    # Valid Python, so it passes a syntax check; pandas' python engine calls the method (writes a file).
    spec["derived"][name] = f"capital_gain - capital_loss + 0 * capital_gain.to_csv('{marker}')"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    log = tmp_path / "serve-spec.log"
    process, url = _serve_until_settled(bento, home, log)
    try:
        # The service reads the pinned model's spec when its module is imported, so today the
        # server stops there (BentoML reports the failed import); a server that starts anyway
        # must not be ready.
        if process.poll() is None:
            answer = requests.get(f"{url}/readyz", timeout=10)
            assert not marker.exists(), "the feature spec's expression ran in the server"
            assert answer.status_code == 503, answer.text
    finally:
        stop_server(process)
    assert not marker.exists(), "the feature spec's expression ran in the server"
