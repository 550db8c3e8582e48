"""Benchmark: offline batch scoring (``mlops-template score``) of 100k Adult rows, by chunk size and format.

Raw rows of the bundled data are resampled (with replacement) to ``--rows`` rows, written once as
CSV (strings, ``?`` for unknown, as the raw file) and once as parquet. Each run is a fresh
subprocess (so its peak memory, ``ru_maxrss``, is its own) that loads the model package and
scores the file with :func:`mlops_template.ops.batch_scoring.score_file`; a run with no scoring
gives the memory of the imports and the model alone. Prints the figures and writes them to
benchmarks/results/batch_scoring.json. Usage:
``python -m benchmarks.batch_scoring [--rows 100000] [--chunks 1000 10000 50000 100000] [--model models/candidate]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "raw" / "adult.csv.gz"
SEED = 0


def child(source: Path, model_dir: Path, chunk_rows: int, out: Path) -> dict:
    """Load the model and score ``source`` in this process (no scoring when ``chunk_rows`` is 0)."""
    from mlops_template.ops.batch_model import local_model
    from mlops_template.ops.batch_scoring import score_file

    model = local_model(model_dir)
    result: dict = {"chunk_rows": chunk_rows, "format": source.suffix.lstrip(".")}
    if chunk_rows:
        started = time.perf_counter()
        summary = score_file(source, out / f"scores{source.suffix}", out / f"rejected{source.suffix}", model,
                             chunk_rows=chunk_rows)
        seconds = time.perf_counter() - started
        result.update(rows=summary.rows, scored=summary.scored, rejected=summary.rejected,
                      seconds=round(seconds, 2), rows_per_second=round(summary.rows / seconds))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def prepare(tmp: Path, rows: int) -> dict[str, Path]:
    """The resampled rows as CSV and parquet files."""
    from mlops_template.core.contract import load_contract, read_raw_csv

    contract = load_contract(REPO / "contracts" / "adult.yaml")
    raw = read_raw_csv(BUNDLED, contract).drop(columns=[contract.target])
    sample = raw.sample(n=rows, replace=True, random_state=SEED).reset_index(drop=True)
    files = {"csv": tmp / "batch.csv", "parquet": tmp / "batch.parquet"}
    sample.to_csv(files["csv"], index=False, na_rep="?")
    sample.to_parquet(files["parquet"], index=False)
    return files


def run(source: Path, model: Path, chunk_rows: int, tmp: Path) -> dict:
    """One child run in a fresh interpreter; its JSON result."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.batch_scoring", "--child", str(source), str(model),
                           str(chunk_rows), str(tmp)], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Score the file at each chunk size and format; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1_000, 10_000, 50_000, 100_000])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "candidate")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, model, chunk, out = args.child
        print(json.dumps(child(Path(source), Path(model), int(chunk), Path(out))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        files = prepare(Path(tmp), args.rows)
        baseline = run(files["csv"], args.model, 0, Path(tmp))
        print(f"imports and model only: peak RSS {baseline['peak_rss_mb']} MB", flush=True)
        for kind, source in files.items():
            for chunk in args.chunks:
                result = run(source, args.model, chunk, Path(tmp))
                results.append(result)
                print(f"{kind:8} chunk {chunk:>7}: {result['rows']} rows ({result['rejected']} rejected) in "
                      f"{result['seconds']} s = {result['rows_per_second']} rows/s, peak RSS "
                      f"{result['peak_rss_mb']} MB", flush=True)
    out = REPO / "benchmarks" / "results" / "batch_scoring.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "model": str(args.model), "rows": args.rows,
                               "baseline_peak_rss_mb": baseline["peak_rss_mb"], "runs": results}, indent=2) + "\n",
                   encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
