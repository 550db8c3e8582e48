"""Small I/O helpers every side shares: atomic JSON and frames, file digests, UTC time.

Outputs are written to a temporary file and renamed, so a crash never leaves a half-written
file that DVC would cache or a reader would trust.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file, then rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_frame(frame, path: str | Path) -> None:
    """Write a DataFrame atomically, as parquet or CSV by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601: the time stamp of every record."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def requirement_pins(path: str | Path) -> list[str]:
    """The ``name==version`` pins of a pip requirements file, without comments or options.

    Whole-line and inline comments, options (``-r``, ``--hash=...``) and line continuations
    are dropped, so the list can be handed to tools that take bare requirement strings (MLflow's
    ``pip_requirements``), whether or not the file carries hashes.
    """
    pins = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if requirement and not requirement.startswith("-"):
            pins.append(requirement.split()[0])
    return pins
