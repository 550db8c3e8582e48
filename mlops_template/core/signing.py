"""Ed25519 signatures of shared JSON documents (the team-mode routing document).

Why Ed25519 rather than HMAC-SHA256: with HMAC every replica that checks a document holds the
same secret that writes one, so one compromised replica (or a leaked replica credential set)
could forge a routing document every other replica follows. With Ed25519 the replicas hold only
the public key; only the jobs that change what serves (deploy, canary, rollback) hold the
private key. Verification costs tens of microseconds, once per document change.

What is signed is the document's canonical form: the JSON object without its ``signature``
member, with sorted keys, no whitespace, ASCII only and no NaN (:func:`canonical`). The
signature is stored in the document itself, so one PUT replaces document and signature together::

    "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}

``key_id`` (the first 16 hex digits of the sha256 of the raw public key) only names the key in
error messages; the verifier trusts its own key, never the document's claim.

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key), made by::

    mlops-template keygen PRIVATE_KEY_FILE PUBLIC_KEY_FILE
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlops_template.core.exitcodes import CommandParser, ExitCode

ALGORITHM = "ed25519"
SIGNATURE_FIELD = "signature"
SIGNATURE_KEYS = {"algorithm", "key_id", "value"}
KEYGEN_COMMAND = "mlops-template keygen PRIVATE_KEY_FILE PUBLIC_KEY_FILE"


class KeyFileError(ValueError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


class SignatureError(ValueError):
    """A document is unsigned or its signature does not verify; ``reason`` says which.

    ``reason`` is ``unsigned`` (no signature) or ``bad_signature`` (a malformed signature, another
    key's, or a document changed after it was signed).
    """

    def __init__(self, reason: str, message: str) -> None:
        """``reason`` is a short label (a metric label), ``message`` the explanation."""
        super().__init__(message)
        self.reason = reason


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes that are signed: the document without ``signature``, in canonical JSON.

    The document is first put through a JSON round trip, so the signer signs exactly what a
    reader will parse (a tuple becomes a list, an int key a string).
    """
    if not isinstance(document, dict):
        raise TypeError(f"a signed document must be a JSON object, got {type(document).__name__}")
    body = {k: v for k, v in document.items() if k != SIGNATURE_FIELD}
    parsed = json.loads(json.dumps(body, allow_nan=False))
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def key_id(public_key: Any) -> str:
    """A short name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_pem(path: str | Path, what: str) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be read ({exc.strerror or exc}); "
                           f"make a key pair with `{KEYGEN_COMMAND}`") from None


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in the PEM file ``path`` (KeyFileError naming the file if not)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_pem(path, "signing key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key file {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key file {path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Any:
    """The Ed25519 public key in the PEM file ``path`` (KeyFileError naming the file if not)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_pem(path, "verify key file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"verify key file {path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"verify key file {path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def sign(document: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """A copy of ``document`` with its signature (any earlier signature replaced)."""
    value = private_key.sign(canonical(document))
    signature = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
                 "value": base64.b64encode(value).decode("ascii")}
    return {**{k: v for k, v in document.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: signature}


def verify(document: dict[str, Any], public_key: Any) -> dict[str, Any]:
    """``document`` without its signature, if ``public_key`` signed exactly this content.

    SignatureError(``unsigned``) when there is no signature; SignatureError(``bad_signature``)
    when it is malformed, made with another key, or the document changed after signing.
    """
    from cryptography.exceptions import InvalidSignature

    signature = document.get(SIGNATURE_FIELD) if isinstance(document, dict) else None
    if signature is None:
        raise SignatureError("unsigned", "the document is not signed")
    if not isinstance(signature, dict) or set(signature) != SIGNATURE_KEYS:
        raise SignatureError("bad_signature", f"the signature must be an object with exactly {sorted(SIGNATURE_KEYS)}")
    if signature["algorithm"] != ALGORITHM:
        raise SignatureError("bad_signature", f"signature algorithm {signature['algorithm']!r} is not {ALGORITHM!r}")
    try:
        value = base64.b64decode(str(signature["value"]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("bad_signature", "the signature value is not base64") from None
    try:
        public_key.verify(value, canonical(document))
    except InvalidSignature:
        trusted = key_id(public_key)
        claimed = signature.get("key_id")
        why = (f"it claims key {claimed!r}, this reader trusts key {trusted!r}" if claimed != trusted
               else "the document was changed after it was signed")
        raise SignatureError("bad_signature", f"the signature does not verify ({why})") from None
    return {k: v for k, v in document.items() if k != SIGNATURE_FIELD}


def generate_key_pair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair as PEM files (the private one mode 0600); return its key id.

    Refuses to overwrite an existing file: replacing a key by accident would stop every replica
    from following the routing document.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists: remove it first to replace the key pair")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops-template keygen PRIVATE PUBLIC``."""
    parser.add_argument("private_key", type=Path, help="private key file, for deploy/canary/rollback "
                        "(ROUTING_SIGNING_KEY_FILE)")
    parser.add_argument("public_key", type=Path, help="public key file, for the replicas (ROUTING_VERIFY_KEY_FILE)")


def handle(args: argparse.Namespace) -> int:
    """Make a key pair for signing routing documents; an existing file raises FileExistsError (never overwritten)."""
    identity = generate_key_pair(args.private_key, args.public_key)
    print(f"key {identity}: private key {args.private_key} (mode 0600; ROUTING_SIGNING_KEY_FILE for deploy, "
          f"canary, rollback), public key {args.public_key} (ROUTING_VERIFY_KEY_FILE for every replica)")
    return ExitCode.OK


if __name__ == "__main__":  # the old spelling, `python -m mlops_template.core.signing keygen PRIVATE PUBLIC`
    print("mlops-template: `python -m mlops_template.core.signing keygen` is deprecated and goes in the next "
          "release; use `mlops-template keygen` (or `python -m mlops_template keygen`)", file=sys.stderr)
    _parser = CommandParser(prog="mlops-template")
    add_arguments(_parser.add_subparsers(dest="command", required=True).add_parser("keygen"))
    _args = _parser.parse_args()
    try:
        sys.exit(handle(_args))
    except OSError as exc:
        print(f"mlops-template keygen: error: {exc}", file=sys.stderr)
        sys.exit(ExitCode.BAD_INPUT)
