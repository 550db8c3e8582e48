"""API keys kept as digests: the key file, its parser, the constant-time check, and key creation.

One file serves the front (HAProxy maps a key's SHA-256 to its name) and the service
(``API_KEYS_FILE``). It never holds a key, only ``<sha256 hex of the key, lowercase> <name>`` per
line, with ``#`` comments and blank lines allowed; a name is ``[A-Za-z0-9._-]{1,64}``. Clients send
``Authorization: Bearer <key>``. A key is shown once, when :func:`create_key` makes it.

The parser is strict: a line that is neither a comment nor a well-formed entry, a repeated name
or a repeated digest makes the whole file unusable (:class:`KeyFileError` names the line), so a
mistyped edit never quietly admits or drops someone. Readers fail closed on such a file.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")
KEY_PREFIX = "mtk_"  # recognisable in a leaked log or a secret scanner
KEY_BYTES = 32  # 256 bits of entropy
FILE_MODE = 0o600


class KeyFileError(ValueError):
    """A key file that cannot be used: unreadable, malformed, or (for readers) holding no key."""


def digest(key: str) -> str:
    """The lowercase hex SHA-256 of a key: what the file stores and what a request is checked by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a key (``[A-Za-z0-9._-]{1,64}``)."""
    return NAME_PATTERN.fullmatch(name) is not None


def parse_keys(text: str, source: str = "key file") -> dict[str, str]:
    """Map each digest in a key file's text to its key's name; raise :class:`KeyFileError` on a bad line.

    An entry is ``<64 lowercase hex> <name>`` separated by whitespace; anything after ``#`` is a
    comment. The error names the line number, never the line (it may hold a pasted secret).
    """
    keys: dict[str, str] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or not DIGEST_PATTERN.fullmatch(fields[0]) or not valid_name(fields[1]):
            raise KeyFileError(f"{source} line {number}: expected '<sha256 hex, lowercase> <name>' "
                               f"with a name of [A-Za-z0-9._-]{{1,64}}")
        key_digest, name = fields
        if key_digest in keys:
            raise KeyFileError(f"{source} line {number}: the same key digest appears twice")
        if name in names:
            raise KeyFileError(f"{source} line {number}: the name {name!r} appears twice")
        keys[key_digest] = name
        names.add(name)
    return keys


def load_keys(path: str | Path) -> dict[str, str]:
    """Read and parse a key file a server checks requests against; it must hold at least one key.

    Raises :class:`KeyFileError` when it cannot be read, is malformed or is empty: a server that
    was told to check keys then admits nobody rather than everybody.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    keys = parse_keys(text, f"key file {path}")
    if not keys:
        raise KeyFileError(f"key file {path} holds no key")
    return keys


def verify(key: str, keys: Mapping[str, str]) -> str | None:
    """The name of the key presented, or None when it is not in ``keys`` (digest -> name).

    The presented key's digest is compared with every stored digest by
    :func:`hmac.compare_digest`, with no early exit, so the time taken says nothing about how much
    of a digest matched or where in the file it sits.
    """
    presented = digest(key).encode("ascii")
    found: str | None = None
    for stored, name in keys.items():
        if hmac.compare_digest(presented, stored.encode("ascii")):
            found = name
    return found


def bearer_token(header: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, or None if there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def new_key() -> str:
    """A fresh random key: a recognisable prefix and 32 URL-safe random bytes (:mod:`secrets`)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so two concurrent edits cannot lose each other's lines."""
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_WRONLY, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_text(path: Path) -> str:
    """The key file's text, or an empty string when it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read ({type(exc).__name__}: {exc})") from exc


def create_key(path: str | Path, name: str) -> str:
    """Make a key named ``name``, append its digest to the file (created 0600) and return the key.

    The key itself is stored nowhere: the caller shows it once. Refuses a malformed name, a name
    already in the file and a file that does not parse (:class:`KeyFileError`).
    """
    if not valid_name(name):
        raise KeyFileError(f"invalid key name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        text = _read_text(path)
        if name in parse_keys(text, f"key file {path}").values():
            raise KeyFileError(f"a key named {name!r} already exists in {path}; revoke it first")
        key = new_key()
        separator = "" if not text or text.endswith("\n") else "\n"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(f"{separator}{digest(key)} {name}\n")
            fh.flush()
            os.fsync(fh.fileno())
    return key


def list_names(path: str | Path) -> list[str]:
    """The names of the keys in a file, in file order (no digests, no keys)."""
    path = Path(path)
    return list(parse_keys(_read_text(path), f"key file {path}").values())


def revoke_key(path: str | Path, name: str) -> None:
    """Remove the key named ``name``; comments and other entries stay as they are.

    The file is rewritten atomically (temporary file with mode 0600, then rename), so a server
    re-reading it never sees half a file. Raises :class:`KeyFileError` if no key has that name.
    """
    path = Path(path)
    with _locked(path):
        text = _read_text(path)
        if name not in parse_keys(text, f"key file {path}").values():
            raise KeyFileError(f"no key named {name!r} in {path}")
        kept = [line for line in text.splitlines(keepends=True)
                if line.split("#", 1)[0].split()[1:2] != [name]]
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(kept))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``mlops-template apikeys``: ``create NAME``, ``list``, ``revoke NAME``.

    ``create`` prints the new key once on stdout (nothing else goes there, so
    ``KEY=$(mlops-template apikeys create ci --file keys.txt)`` works); messages go to stderr.
    ``--file`` defaults to ``$API_KEYS_FILE`` and is required without it.
    """
    commands = parser.add_subparsers(dest="command", required=True)
    for command, helptext in (("create", "make a key, print it once, store its digest"),
                              ("list", "print the names of the keys"),
                              ("revoke", "remove a key by name")):
        sub = commands.add_parser(command, help=helptext)
        if command != "list":
            sub.add_argument("name", help="the key's name: 1-64 of A-Z a-z 0-9 . _ -")
        sub.add_argument("--file", default=os.environ.get("API_KEYS_FILE") or None,
                         required=not os.environ.get("API_KEYS_FILE"),
                         help="the key file (default: $API_KEYS_FILE)")


def handle(args: argparse.Namespace) -> int:
    """Create, list or revoke a key; a refused change raises :class:`KeyFileError` (exit 65, one line)."""
    if args.command == "create":
        key = create_key(args.file, args.name)
        print(key, flush=True)
        print(f"key {args.name!r} added to {args.file}; it is shown only this once", file=sys.stderr)
    elif args.command == "list":
        for name in list_names(args.file):
            print(name)
    else:
        revoke_key(args.file, args.name)
        print(f"key {args.name!r} revoked in {args.file}", file=sys.stderr)
    return 0
