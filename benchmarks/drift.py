"""Benchmark: the drift job on inference-log windows of 10k and 100k records.

Validated rows of the bundled data are resampled (with replacement) into an inference log per
size, and a reference of 5,000 other rows is drawn, as featurize does. Each job runs in a fresh
subprocess so that its peak memory (``ru_maxrss``) is its own. Prints the figures and writes
them to benchmarks/results/drift.json. Usage: ``python -m benchmarks.drift [--sizes 10000 100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_ROWS = 5000
SEED = 0


def child(log_dir: Path, reference: Path, rows: int, report_dir: Path) -> dict:
    """Run one drift job in this process; its timings and peak memory."""
    started = time.perf_counter()
    import evidently.presets  # noqa: F401  (timed here rather than inside the job)

    from mlops_template.core.contract import load_contract
    from mlops_template.monitoring import Window
    from mlops_template.monitoring.alerts import AlertSink
    from mlops_template.monitoring.drift import run_drift_job
    from mlops_template.serving.inference_log import read_log

    imported = time.perf_counter()
    read_log(log_dir, last_n=rows)
    read = time.perf_counter()
    summary = run_drift_job(log_dir, reference, load_contract(REPO / "contracts/adult.yaml"),
                            Window(last_n=rows), 0.2, report_dir, AlertSink(report_dir))
    done = time.perf_counter()
    return {
        "rows": summary["rows_current"],
        "import_seconds": round(imported - started, 2),
        "read_log_seconds": round(read - imported, 2),
        "job_seconds": round(done - read, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "html_mb": round((report_dir / "drift.html").stat().st_size / 1e6, 1),
        "drift_share": summary["drift_share"],
    }


def prepare(tmp: Path, sizes: list[int]) -> tuple[Path, dict[int, tuple[Path, float, int]]]:
    """The reference file and, per size, a log directory with its write time and size on disk."""
    from mlops_template.core.contract import load_contract
    from mlops_template.pipeline.validation import validate_file
    from mlops_template.serving.inference_log import InferenceLog

    contract = load_contract(REPO / "contracts/adult.yaml")
    rows = validate_file(REPO / "data/raw/adult.csv.gz", contract).valid.sample(frac=1.0, random_state=SEED)
    reference_path = tmp / "reference.parquet"
    rows.iloc[:REFERENCE_ROWS].to_parquet(reference_path)
    pool = rows.iloc[REFERENCE_ROWS:]
    inputs = [c.name for c in contract.input_columns]
    logs = {}
    for size in sizes:
        sample = pool.sample(size, replace=True, random_state=SEED)[inputs]
        features = sample.astype(object).where(sample.notna(), None).to_dict("records")
        entries = [{"request_id": f"r{i}", "record_index": 0, "model_version": "bench",
                    "features": f, "probability": 0.5, "label": "<=50K"} for i, f in enumerate(features)]
        log_dir = tmp / f"log-{size}"
        started = time.perf_counter()
        with InferenceLog(log_dir, buffer_size=size) as log:
            log.submit(entries)
        elapsed = time.perf_counter() - started
        logs[size] = (log_dir, elapsed, sum(p.stat().st_size for p in log_dir.iterdir()))
    return reference_path, logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/drift.json")
    parser.add_argument("--child", nargs=4, metavar=("LOG_DIR", "REFERENCE", "ROWS", "REPORT_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        log_dir, reference, rows, report_dir = args.child
        print(json.dumps(child(Path(log_dir), Path(reference), int(rows), Path(report_dir))))
        return

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp_name:
        tmp = Path(tmp_name)
        reference, logs = prepare(tmp, args.sizes)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for size, (log_dir, write_seconds, log_bytes) in logs.items():
            command = [sys.executable, "-m", "benchmarks.drift", "--child", str(log_dir), str(reference),
                       str(size), str(tmp / f"reports-{size}")]
            started = time.perf_counter()
            out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            figures.update(log_write_seconds=round(write_seconds, 2), log_mb=round(log_bytes / 1e6, 1),
                           process_seconds=round(time.perf_counter() - started, 2))
            print(f"{size:>7} records: job {figures['job_seconds']} s (read {figures['read_log_seconds']} s, "
                  f"imports {figures['import_seconds']} s), peak RSS {figures['peak_rss_mb']} MB, "
                  f"log {figures['log_mb']} MB written in {figures['log_write_seconds']} s", flush=True)
            results.append(figures)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "reference_rows": REFERENCE_ROWS,
        "windows": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
