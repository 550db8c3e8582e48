"""Benchmark part: serving throughput of every task in one run (``python -m benchmarks.serving --only tasks``).

One HistGradientBoosting model per dataset, all with the same hyperparameters (:data:`HYPERPARAMETERS`):
binary on the repository's Adult data, multiclass on sklearn's wine (3 classes, 13 columns) and
digits (10 classes, 64 columns), regression on sklearn's diabetes (10 columns). Each is packaged
as the deploy stage packages a model (tests/support/task_models.py: a BentoML model whose
``serving.json`` names the task, and a bento pinned to it) and served by its own ``bentoml
serve`` (defaults: micro-batching, the numpy replay; inference log off), all at once. wrk drives
each with single-record requests of its own held-out rows, in alternating rounds so that the
machine's drift hits every task alike. Figures: the median ok req/s and p99 per dataset, and each
dataset's throughput relative to binary's, the median of per-round ratios (issue 19's goal: every
task within 20% of binary, i.e. a ratio of at least 0.8).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.task_models import TaskData, adult_data, package_in_child, task_data

logger = logging.getLogger(__name__)

HYPERPARAMETERS = {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "early_stopping": False}
DATASETS = ("adult", "wine", "digits", "diabetes")
GOAL_RATIO = 0.8


def _datasets() -> dict[str, TaskData]:
    """Every benchmarked dataset, binary first (the reference)."""
    return {name: adult_data(train_rows=10000, test_rows=500) if name == "adult" else task_data(name)
            for name in DATASETS}


def _trees(pipeline: Any) -> dict[str, int]:
    """Trees and nodes of the fitted HistGradientBoosting model (what a record walks)."""
    predictors = pipeline.steps[-1][1]._predictors
    return {"trees": sum(len(p) for p in predictors),
            "nodes": int(sum(len(tree.nodes) for p in predictors for tree in p))}


def _scorer(log: Path) -> str:
    """How the server says it scores (its start-up log line): the numpy replay or the sklearn pipeline."""
    text = log.read_text(errors="replace")
    return "numpy replay" if "numpy replay" in text else "sklearn pipeline" if "sklearn pipeline" in text else "?"


def task_throughput(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Package, serve and drive one model per dataset; figures per dataset and ratios to binary."""
    from benchmarks.serving import Server, drive, median_result, report, wrk_script

    directory.mkdir(parents=True, exist_ok=True)
    data = _datasets()
    pipelines = {name: d.fit("hist_gradient_boosting", HYPERPARAMETERS) for name, d in data.items()}
    home = directory / "bentoml"
    tags = package_in_child({name: d.package(directory / "models", pipelines[name]) for name, d in data.items()},
                            home)
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "INFERENCE_LOG": "off"}
    scripts = {name: wrk_script(d.records(d.test), directory / f"{name}.lua") for name, d in data.items()}
    servers = {name: Server(tags[name]["bento_tag"], env, directory) for name in data}
    runs: dict[str, list[dict]] = {name: [] for name in data}
    scorers: dict[str, str] = {}
    try:
        for name, server in servers.items():
            server.wait_ready()
            scorers[name] = _scorer(server.log)
            drive(server.url, scripts[name], args.concurrency, args.warmup)
        for round_number in range(args.rounds):
            for name, server in servers.items():
                runs[name].append(drive(server.url, scripts[name], args.concurrency, args.duration))
                report(f"{name} #{round_number + 1}", runs[name][-1])
    finally:
        for server in servers.values():
            server.stop()
    reference = runs["adult"]
    ratios = {name: [round(r["ok_rps"] / b["ok_rps"], 3) for r, b in zip(measured, reference, strict=True)]
              for name, measured in runs.items() if name != "adult"}
    return {
        "method": (f"wrk, {args.concurrency} connections, single-record requests, {args.duration:g} s per round, "
                   f"{args.rounds} rounds alternating over one `bentoml serve` per dataset (all running at once); "
                   f"HistGradientBoosting {HYPERPARAMETERS} for every task"),
        "models": {name: {"task": d.task.name, "columns": len(d.contract.input_columns),
                          "classes": len(d.task.classes) or None, **_trees(pipelines[name]),
                          "scored_with": scorers.get(name)}
                   for name, d in data.items()},
        "results": {name: median_result(measured) for name, measured in runs.items()},
        "vs_binary_throughput": {name: float(np.median(per_round)) for name, per_round in ratios.items()},
        "vs_binary_throughput_per_round": ratios,
        "goal": {"want": f">= {GOAL_RATIO} for every task",
                 "met": all(float(np.median(r)) >= GOAL_RATIO for r in ratios.values())},
    }


def print_task_throughput(part: dict[str, Any]) -> None:
    """Per dataset: task, trees, req/s, p99, ratio to binary."""
    print("\nthroughput per task (closed loop, alternating rounds; binary = adult)")
    for name, result in part["results"].items():
        model = part["models"][name]
        ratio = part["vs_binary_throughput"].get(name)
        print(f"  {name:<9} {model['task']:<11} {model['trees']:>5} trees ({model['scored_with']}) "
              f"{result['ok_rps']:>8.1f} req/s (median)  "
              f"p99 {result['p99_ms']:.1f} ms  non-2xx {result['shed_share']:.1%}"
              + (f"  vs binary {ratio:.3f} (per round {part['vs_binary_throughput_per_round'][name]})"
                 if ratio is not None else ""))
    print(f"  goal {part['goal']['want']}: {'met' if part['goal']['met'] else 'NOT met'}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The part on its own, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        return task_throughput(args, Path(tmp))
