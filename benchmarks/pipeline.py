"""Benchmark: full and no-op `dvc repro` on the bundled data, time per stage, test ROC AUC.

Runs in a fresh `git clone` of this repository (as a newcomer would), prints the figures and
writes them to benchmarks/results/pipeline.json. Usage: `python -m benchmarks.pipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def environment(clone: Path) -> dict[str, str]:
    """Subprocess environment: this interpreter's tools first, state inside the clone."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BENTOML_HOME"] = str(clone / ".bentoml")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def timed_repro(clone: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Wall time of one `dvc repro` and the time from each stage's start to the next one's."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    proc = subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = []
    for line in proc.stdout:
        output.append(line)
        match = STAGE_LINE.search(line)
        if match:
            marks.append((match.group(1), time.perf_counter()))
            print(f"  {time.perf_counter() - start:6.1f}s  stage {match.group(1)}", flush=True)
    if proc.wait() != 0:
        raise RuntimeError("dvc repro failed:\n" + "".join(output[-40:]))
    end = time.perf_counter()
    stages = {name: round((marks[i + 1][1] if i + 1 < len(marks) else end) - t, 3)
              for i, (name, t) in enumerate(marks)}
    return end - start, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--noop-runs", type=int, default=5)
    parser.add_argument("--output", default=str(REPO / "benchmarks/results/pipeline.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        env = environment(clone)
        print("full dvc repro in a fresh clone:", flush=True)
        full, stages = timed_repro(clone, env)
        noop = []
        for _ in range(args.noop_runs):
            t0 = time.perf_counter()
            subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, capture_output=True)
            noop.append(time.perf_counter() - t0)
        evaluation = json.loads((clone / "metrics/evaluation.json").read_text())
        params_text = (clone / "params.yaml").read_text()

    estimator = re.search(r"^\s*estimator:\s*(\S+)", params_text, re.M).group(1)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "full_repro_seconds": round(full, 2),
        "full_repro_goal_seconds": 45,
        "stage_seconds": stages,
        "noop_repro_seconds_median": round(statistics.median(noop), 3),
        "noop_repro_seconds_all": [round(t, 3) for t in noop],
        "noop_repro_goal_seconds": 1.5,
        "default_estimator": estimator,
        "test_roc_auc": evaluation["roc_auc"],
        "test_roc_auc_goal": 0.90,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
