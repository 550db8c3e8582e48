"""API keys kept as digests: parsing the key file, the constant-time check, the key command."""

from __future__ import annotations

import hashlib
import hmac
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_template.core import apikeys
from mlops_template.core.apikeys import KeyFileError, bearer_token, create_key, digest, parse_keys, verify
from mlops_template.core.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[3]
ALICE, BOB = "alice-key-1", "bob-key-2"


def entry(key: str, name: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()} {name}"


def test_parse_reads_entries_and_skips_comments_and_blank_lines() -> None:
    text = f"# keys of the front\n\n{entry(ALICE, 'alice')}  # the analytics team\n   \n{entry(BOB, 'bob.ci_2-x')}\n"
    assert parse_keys(text) == {digest(ALICE): "alice", digest(BOB): "bob.ci_2-x"}


@pytest.mark.parametrize("line", [
    "abc alice",                                             # not a sha256
    f"{digest(ALICE).upper()} alice",                        # uppercase hex
    digest(ALICE),                                           # no name
    f"{digest(ALICE)} two names",                            # a space in the name
    f"{digest(ALICE)} {'n' * 65}",                           # name too long
    f"{digest(ALICE)} al/ice",                               # character outside the name set
    f"Bearer {ALICE}",                                       # a key pasted instead of its digest
])
def test_a_bad_line_makes_the_file_unusable_and_is_named_by_number(line: str) -> None:
    with pytest.raises(KeyFileError, match="line 2") as caught:
        parse_keys(f"{entry(BOB, 'bob')}\n{line}\n")
    assert ALICE not in str(caught.value)  # the line is never echoed: it may hold a secret


def test_a_repeated_name_or_digest_is_refused() -> None:
    with pytest.raises(KeyFileError, match="name 'alice' appears twice"):
        parse_keys(f"{entry(ALICE, 'alice')}\n{entry(BOB, 'alice')}\n")
    with pytest.raises(KeyFileError, match="digest appears twice"):
        parse_keys(f"{entry(ALICE, 'alice')}\n{entry(ALICE, 'bob')}\n")


def test_load_fails_closed_on_an_empty_missing_or_unreadable_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n", encoding="utf-8")
    with pytest.raises(KeyFileError, match="holds no key"):
        apikeys.load_keys(empty)
    with pytest.raises(KeyFileError, match="cannot be read"):
        apikeys.load_keys(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeyFileError, match="cannot be read"):
        apikeys.load_keys(binary)


def test_verify_names_the_key_and_refuses_others() -> None:
    keys = parse_keys(f"{entry(ALICE, 'alice')}\n{entry(BOB, 'bob')}\n")
    assert verify(ALICE, keys) == "alice"
    assert verify(BOB, keys) == "bob"
    assert verify("alice-key-", keys) is None
    assert verify(digest(ALICE), keys) is None  # the digest itself is not a key
    assert verify("", keys) is None


def test_verify_compares_every_digest_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored digest goes through hmac.compare_digest, with no early exit on a match."""
    keys = parse_keys("\n".join(entry(f"key-{i}", f"k{i}") for i in range(5)))
    compared: list[bytes] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return original(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    assert verify("key-0", keys) == "k0"  # the first entry matches ...
    assert len(compared) == 5  # ... and the other four are still compared
    assert {c.decode() for c in compared} == set(keys)


@pytest.mark.parametrize("header, token", [
    (f"Bearer {ALICE}", ALICE), (f"bearer  {ALICE} ", ALICE), (None, None), ("", None),
    (f"Basic {ALICE}", None), ("Bearer", None), ("Bearer a b", None), (ALICE, None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_create_appends_a_digest_never_the_key_and_refuses_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.txt"
    first = create_key(path, "alice")
    second = create_key(path, "bob")
    assert first != second and first.startswith(apikeys.KEY_PREFIX)
    assert len(first) - len(apikeys.KEY_PREFIX) >= 43  # 32 random bytes, URL-safe base64
    assert all(c.isalnum() or c in "-_" for c in first)
    text = path.read_text(encoding="utf-8")
    assert first not in text and second not in text
    assert apikeys.load_keys(path) == {digest(first): "alice", digest(second): "bob"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(path, "alice")
    with pytest.raises(KeyFileError, match="invalid key name"):
        create_key(path, "no spaces")
    assert apikeys.list_names(path) == ["alice", "bob"]


def test_create_on_a_file_without_final_newline_and_revoke_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"# ops keys\n{entry(ALICE, 'alice')}", encoding="utf-8")
    key = create_key(path, "carol")
    apikeys.revoke_key(path, "alice")
    assert path.read_text(encoding="utf-8") == f"# ops keys\n{digest(key)} carol\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="no key named 'alice'"):
        apikeys.revoke_key(path, "alice")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops_template", "apikeys", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_command_prints_the_key_once_lists_names_and_revokes(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    made = run("create", "prometheus", "--file", str(path))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == f"{key}\n" and key.startswith(apikeys.KEY_PREFIX)  # nothing else on stdout
    assert verify(key, apikeys.load_keys(path)) == "prometheus"
    again = run("create", "prometheus", "--file", str(path))
    assert again.returncode == ExitCode.BAD_INPUT and "already exists" in again.stderr and again.stdout == ""
    assert run("list", "--file", str(path)).stdout == "prometheus\n"
    assert run("revoke", "prometheus", "--file", str(path)).returncode == 0
    assert run("list", "--file", str(path)).stdout == ""
    assert run("revoke", "prometheus", "--file", str(path)).returncode == ExitCode.BAD_INPUT
    assert run("list").returncode == ExitCode.USAGE  # no file named
