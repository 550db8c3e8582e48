"""Benchmark: the bad-batch guard's false-alarm rate on clean batches, and its time.

For each dataset (Adult from the repository; statsmodels' ``fair`` and ``randhie``, see
``tests/support/guard_data.py``) and each of ``--batches`` seeds: the rows are shuffled, a
clean batch of held-out rows is drawn, the rest is the accepted data, of which a random
``WINDOW_SHARE`` is the fixed reference window (so the cumulative checks run too), and the guard
judges the batch with the thresholds of ``params.yaml``. Every failure is a false alarm. Prints
the rate per check and overall with a 95% upper bound, and the guard's time for a 10,000-row
Adult batch; writes them to ``benchmarks/results/guard.json``.

Usage: ``python -m benchmarks.guard [--batches 60] [--datasets adult fair randhie]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from mlops_template.core.config import load_params
from mlops_template.ops.guard import Accepted, check_batch
from mlops_template.pipeline.validation import validate_frame
from tests.support.guard_data import LOADERS, Dataset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/guard.json"
BATCH_ROWS = {"adult": 3000, "fair": 1200, "randhie": 1000}
WINDOW_SHARE = 0.8
TIMED_ROWS = 10_000


def upper_bound(failures: int, trials: int) -> float:
    """One-sided 95% upper confidence bound of a rate (Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if failures >= trials else float(beta.ppf(0.95, failures + 1, trials - failures))


def clean_batch(data: Dataset, rows: int, seed: int) -> tuple:
    """A clean batch of held-out rows, and the accepted rest with a reference window inside it."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.raw))
    batch = data.raw.iloc[order[:rows]].reset_index(drop=True)
    valid = validate_frame(data.raw.iloc[order[rows:]], data.contract).valid
    window = rng.random(len(valid)) < WINDOW_SHARE
    return batch, Accepted.from_frame(valid, data.contract, window)


def false_alarms(data: Dataset, batches: int, thresholds: dict) -> dict:
    """Run the guard on ``batches`` clean batches; failures per check and overall."""
    rows = BATCH_ROWS[data.name]
    per_check: dict[str, int] = {}
    failed_batches, seconds = 0, []
    for seed in range(batches):
        batch, accepted = clean_batch(data, rows, seed)
        started = time.perf_counter()
        report, _ = check_batch(f"{data.name}-{seed}", batch, accepted, data.contract, thresholds,
                                data.model_columns)
        seconds.append(time.perf_counter() - started)
        for check in report.checks:
            per_check.setdefault(check.name, 0)
            if not check.passed:
                per_check[check.name] += 1
        if not report.accepted:
            failed_batches += 1
            logging.info("%s seed %d: false alarm: %s", data.name, seed, report.reasons)
    return {"batches": batches, "batch_rows": rows, "accepted_rows": len(data.raw) - rows,
            "false_alarms": failed_batches, "rate": failed_batches / batches,
            "rate_upper_95": round(upper_bound(failed_batches, batches), 4),
            "per_check": {name: {"false_alarms": n, "rate": n / batches} for name, n in per_check.items()},
            "mean_guard_seconds": round(float(np.mean(seconds)), 3)}


def timed(thresholds: dict) -> dict:
    """The guard's time for one 10,000-row Adult batch against the rest (validation included).

    Wall and CPU time: on a shared machine the CPU time is the steadier figure.
    """
    data = LOADERS["adult"]()
    batch, accepted = clean_batch(data, TIMED_ROWS, 12345)
    check_batch("warm-up", batch.head(500), accepted, data.contract, thresholds, data.model_columns)  # imports
    started, cpu = time.perf_counter(), time.process_time()
    report, _ = check_batch("timed", batch, accepted, data.contract, thresholds, data.model_columns)
    return {"rows": TIMED_ROWS, "accepted_rows": len(accepted.frame),
            "seconds": round(time.perf_counter() - started, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "load_average": round(__import__("os").getloadavg()[0], 1), "accepted": report.accepted}


def main() -> None:
    """Parse arguments, measure, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlops_template").setLevel(logging.ERROR)
    logging.getLogger(__name__).setLevel(logging.INFO)
    thresholds = load_params(REPO / "params.yaml")["ingest"]
    results = {"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "datasets": {},
               "thresholds": {k: v for k, v in thresholds.items() if not isinstance(v, str)}}
    for name in args.datasets:
        figures = false_alarms(LOADERS[name](), args.batches, thresholds)
        results["datasets"][name] = figures
        print(f"{name}: {figures['false_alarms']}/{figures['batches']} clean batches of {figures['batch_rows']} "
              f"rows rejected ({figures['rate']:.1%}, 95% upper bound {figures['rate_upper_95']:.1%}); "
              f"guard {figures['mean_guard_seconds']} s per batch", flush=True)
        for check, counts in figures["per_check"].items():
            if counts["false_alarms"]:
                print(f"  {check}: {counts['false_alarms']} false alarm(s)")
    total = sum(d["false_alarms"] for d in results["datasets"].values())
    trials = sum(d["batches"] for d in results["datasets"].values())
    results["overall"] = {"false_alarms": total, "batches": trials, "rate": total / trials,
                          "rate_upper_95": round(upper_bound(total, trials), 4)}
    results["timed_10k"] = timed(thresholds)
    print(f"overall: {total}/{trials} ({total / trials:.1%}, 95% upper bound "
          f"{results['overall']['rate_upper_95']:.1%}); guard on a {TIMED_ROWS}-row Adult batch: "
          f"{results['timed_10k']['seconds']} s ({results['timed_10k']['cpu_seconds']} s CPU, "
          f"load average {results['timed_10k']['load_average']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
