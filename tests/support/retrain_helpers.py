"""Helpers for the retraining tests: command summaries and batch files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.support.clones import Clone


def last_json_line(stdout: str) -> dict:
    """The machine-readable summary a command prints last."""
    return json.loads(stdout.strip().splitlines()[-1])


def split_raw(raw_gz: Path, out_dir: Path, share: float = 0.25, parts: int = 2) -> list[Path]:
    """Move the last ``share`` of the rows of ``raw_gz`` into ``parts`` gzip batch files in ``out_dir``.

    The header line is kept in every file; the rows left in ``raw_gz`` are the first ones.
    """
    with gzip.open(raw_gz, "rt", encoding="utf-8") as fh:
        header, *rows = fh.readlines()
    keep = len(rows) - int(len(rows) * share)
    rest = rows[keep:]
    size = -(-len(rest) // parts)
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(path: Path, lines: list[str]) -> Path:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(header)
            fh.writelines(lines)
        return path

    write(raw_gz, rows[:keep])
    return [write(out_dir / f"batch-{i + 1:02d}.csv.gz", rest[i * size:(i + 1) * size]) for i in range(parts)]


def baseline_clone(base: Path, user: str) -> Clone:
    """A clone in ``base`` with two batches held back (``clone.batches``) and champion v1 trained on
    the rest, both committed."""
    clone = Clone.create(base / "repo", user=user)
    clone.batches = split_raw(clone.path / "data/raw/adult.csv.gz", base / "batches")
    clone.git("add", "-A")
    clone.git("commit", "--quiet", "-m", "test setup: hold back two batches")
    clone.dvc("repro")
    clone.git("add", "-A")
    clone.git("commit", "--quiet", "-m", "baseline")
    return clone
