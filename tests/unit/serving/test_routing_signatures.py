"""Signed routing documents: the signature, its canonical form, and what a reader refuses.

Keys are real Ed25519 keys made by the project's keygen command; the team-mode store is moto's
in-process S3.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_template.core import objectstore, signing
from mlops_template.core.exitcodes import ExitCode
from mlops_template.serving import routing
from mlops_template.serving.guard import GuardRuntime, GuardSettings, RequestGuard

REPO = Path(__file__).resolve().parents[3]
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64
BUCKET = "trust"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs made by the documented command: the deploy key and somebody else's."""
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("deploy", "other"):
        done = subprocess.run([sys.executable, "-m", "mlops_template", "keygen",
                               str(folder / f"{name}.key"), str(folder / f"{name}.pub")],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        made[name], made[f"{name}_pub"] = folder / f"{name}.key", folder / f"{name}.pub"
    return made


def _document() -> dict:
    document = routing.champion_only("adult-income", "adult-income:v1", "1", 0.1, SHA_A)
    document["champion"]["archive_sha256"] = SHA_B
    document["challenger"] = {"model_tag": "adult-income:v2", "model_version": "2",
                              "model_sha256": SHA_C, "archive_sha256": SHA_A}
    return document


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys: dict[str, Path]) -> None:
    assert stat.S_IMODE(os.stat(keys["deploy"]).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in keys["deploy"].read_bytes()
    assert b"BEGIN PUBLIC KEY" in keys["deploy_pub"].read_bytes()
    again = subprocess.run([sys.executable, "-m", "mlops_template", "keygen", str(keys["deploy"]),
                            str(keys["deploy_pub"]) + ".new"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == ExitCode.BAD_INPUT and "exists" in again.stderr
    assert not Path(str(keys["deploy_pub"]) + ".new").exists()


def test_a_signed_document_verifies_whatever_its_layout(keys: dict[str, Path]) -> None:
    """The canonical form ignores key order and whitespace: a document re-serialised by any
    writer verifies, and verification returns it without its signature."""
    private = signing.load_private_key(keys["deploy"])
    public = signing.load_public_key(keys["deploy_pub"])
    signed = signing.sign(_document(), private)
    assert signed["signature"]["algorithm"] == "ed25519"
    assert signed["signature"]["key_id"] == signing.key_id(public)
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=4))
    assert signing.verify(reordered, public) == _document()


def test_the_canonical_form_is_sorted_compact_ascii_json_without_the_signature() -> None:
    document = {"b": [1, 2.5], "a": {"z": "é", "y": None}, "signature": {"value": "x"}}
    assert signing.canonical(document) == b'{"a":{"y":null,"z":"\\u00e9"},"b":[1,2.5]}'
    with pytest.raises(ValueError):
        signing.canonical({"share": float("nan")})


@pytest.mark.parametrize("tamper", [
    lambda d: d["champion"].update(model_sha256=SHA_C),
    lambda d: d["champion"].update(archive_sha256=SHA_C),
    lambda d: d["champion"].update(model_tag="adult-income:evil"),
    lambda d: d.update(challenger=None),
    lambda d: d.update(canary_share=1.0),
    lambda d: d.update(updated_at="2030-01-01T00:00:00+00:00"),
    lambda d: d.update(model_name="other"),
], ids=["model_sha256", "archive_sha256", "model_tag", "challenger", "canary_share", "updated_at", "model_name"])
def test_any_changed_field_breaks_the_signature(keys: dict[str, Path], tamper) -> None:
    signed = signing.sign(_document(), signing.load_private_key(keys["deploy"]))
    changed = copy.deepcopy(signed)
    tamper(changed)
    with pytest.raises(signing.SignatureError, match="changed after it was signed") as refused:
        signing.verify(changed, signing.load_public_key(keys["deploy_pub"]))
    assert refused.value.reason == "bad_signature"


def test_another_keys_signature_is_refused_naming_both_keys(keys: dict[str, Path]) -> None:
    forged = signing.sign(_document(), signing.load_private_key(keys["other"]))
    public = signing.load_public_key(keys["deploy_pub"])
    with pytest.raises(signing.SignatureError) as refused:
        signing.verify(forged, public)
    assert refused.value.reason == "bad_signature"
    assert signing.key_id(public) in str(refused.value) and forged["signature"]["key_id"] in str(refused.value)


@pytest.mark.parametrize("signature, reason", [
    (None, "unsigned"),
    ({"algorithm": "ed25519", "key_id": "x", "value": "not base64!"}, "bad_signature"),
    ({"algorithm": "hmac-sha256", "key_id": "x", "value": "AAAA"}, "bad_signature"),
    ({"algorithm": "ed25519", "value": "AAAA"}, "bad_signature"),
    ("AAAA", "bad_signature"),
])
def test_unsigned_and_malformed_signatures_are_refused(keys: dict[str, Path], signature, reason) -> None:
    document = _document()
    if signature is not None:
        document["signature"] = signature
    with pytest.raises(signing.SignatureError) as refused:
        signing.verify(document, signing.load_public_key(keys["deploy_pub"]))
    assert refused.value.reason == reason


def test_a_key_file_of_the_wrong_kind_is_named(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(signing.KeyFileError, match="deploy.pub"):
        signing.load_private_key(keys["deploy_pub"])
    with pytest.raises(signing.KeyFileError, match="keygen"):
        signing.load_public_key(tmp_path / "missing.pub")


def test_what_a_service_refuses(keys: dict[str, Path]) -> None:
    """Team mode: only a signed document whose slots carry both digests. One machine: a slot
    without model_sha256; with a verify key configured, also an unsigned document."""
    public = signing.load_public_key(keys["deploy_pub"])
    signed = signing.sign(_document(), signing.load_private_key(keys["deploy"]))
    assert routing.check_trusted(signed, public, team=True) == _document()
    assert routing.check_trusted(_document(), None, team=False) == _document()

    def reason(document: dict, key, team: bool) -> str:
        with pytest.raises(routing.RoutingRefused) as refused:
            routing.check_trusted(document, key, team)
        return refused.value.reason

    assert reason(_document(), public, team=True) == "unsigned"
    assert reason(_document(), None, team=True) == "unsigned"
    assert reason(_document(), public, team=False) == "unsigned"
    no_archive = _document()
    del no_archive["challenger"]["archive_sha256"]
    assert reason(signing.sign(no_archive, signing.load_private_key(keys["deploy"])), public, team=True) == "no_digest"
    assert routing.check_trusted(no_archive, None, team=False) == no_archive
    no_model = _document()
    del no_model["champion"]["model_sha256"]
    assert reason(no_model, None, team=False) == "no_digest"


def test_a_malformed_digest_breaks_the_schema(tmp_path: Path) -> None:
    document = routing.champion_only("m", "m:abc", "3", 0.0, "ABC")
    with pytest.raises(routing.RoutingError, match="model_sha256 must be a sha256"):
        routing.write_routing(tmp_path / "routing.json", document)


def test_a_local_file_is_signed_when_a_key_is_configured(keys: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers sign with ROUTING_SIGNING_KEY_FILE; a writer never builds on a document its key did not sign."""
    path = tmp_path / "routing.json"
    monkeypatch.setenv(routing.SIGNING_KEY_ENV_VAR, str(keys["deploy"]))
    routing.write_routing(path, routing.champion_only("m", "m:abc", "3", 0.0, SHA_A))
    written = routing.read_routing(path)
    public = signing.load_public_key(keys["deploy_pub"])
    assert routing.check_trusted(written, public, team=False)["champion"]["model_sha256"] == SHA_A
    assert routing.read_for_update(path)["champion"]["model_tag"] == "m:abc"
    monkeypatch.setenv(routing.SIGNING_KEY_ENV_VAR, str(keys["other"]))
    with pytest.raises(routing.RoutingRefused, match="not signed by this deploy key"):
        routing.read_for_update(path)
    monkeypatch.setenv(routing.SIGNING_KEY_ENV_VAR, str(keys["deploy_pub"]))
    with pytest.raises(routing.RoutingError, match=routing.SIGNING_KEY_ENV_VAR):
        routing.write_routing(path, routing.champion_only("m", "m:abc", "3", 0.0, SHA_A))


def test_team_mode_writes_nothing_without_a_signing_key(store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(routing.SIGNING_KEY_ENV_VAR, raising=False)
    url = f"s3://{BUCKET}/serving/routing.json"
    with pytest.raises(routing.RoutingError, match=f"set {routing.SIGNING_KEY_ENV_VAR}"):
        routing.write_routing(url, routing.champion_only("m", "m:abc", "3", 0.0, SHA_A))
    assert not objectstore.exists(objectstore.ObjectUrl.parse(url))
    objectstore.put_bytes(objectstore.ObjectUrl.parse(url),
                          json.dumps(routing.champion_only("m", "m:abc", "3", 0.0, SHA_A)).encode())
    with pytest.raises(routing.RoutingError, match=routing.SIGNING_KEY_ENV_VAR):  # canary cannot build on it
        routing.read_for_update(url)


def test_a_replica_in_team_mode_needs_a_verify_key(monkeypatch: pytest.MonkeyPatch, keys: dict[str, Path]) -> None:
    monkeypatch.delenv(routing.VERIFY_KEY_ENV_VAR, raising=False)
    assert routing.verify_key_from_env(team=False) is None
    with pytest.raises(signing.KeyFileError, match=f"{routing.VERIFY_KEY_ENV_VAR} is not"):
        routing.verify_key_from_env(team=True)
    monkeypatch.setenv(routing.VERIFY_KEY_ENV_VAR, str(keys["deploy_pub"]))
    assert signing.key_id(routing.verify_key_from_env(team=True)) == signing.key_id(
        signing.load_public_key(keys["deploy_pub"]))


def _readyz(runtime: GuardRuntime, status: int) -> tuple[int, bytes]:
    async def bentoml_readyz(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"\n", "more_body": False})

    settings = GuardSettings(path="/predict", request_model=None, max_body_bytes=1000, max_records=10,  # type: ignore[arg-type]
                             max_concurrency=1)
    sent: list[dict] = []

    async def collect(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "path": "/readyz", "method": "GET", "headers": []}
    asyncio.run(RequestGuard(bentoml_readyz, settings, runtime)(scope, receive, collect))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_readyz_says_a_routing_document_was_refused_while_ready() -> None:
    refused = {"reason": "bad_signature", "detail": "the signature does not verify", "document": "s3://b/r.json"}
    runtime = GuardRuntime(is_ready=lambda: True, readiness_detail=lambda: {"routing_refused": refused})
    status, body = _readyz(runtime, 200)
    assert status == 200 and json.loads(body) == {"ready": True, "routing_refused": refused}
    assert _readyz(GuardRuntime(is_ready=lambda: True), 200) == (200, b"\n")
