"""DVC experiments a person can read, and the promotion of one of them.

``mlops-template experiments show`` prints one line per experiment that fits an
80-column terminal: the task's two headline metrics (binary: ROC AUC and log loss; multiclass: log
loss and accuracy; regression: RMSE and MAE) and value per row, whether it was blessed, and only
the params it changed against the commit it ran from (``dvc exp show`` prints every param and
metric, 200+ columns).

``mlops-template experiments promote NAME`` deploys a blessed experiment: experiment
runs never deploy (the deploy stage records their gate decision and stops), so this applies
the experiment to the workspace (``dvc exp apply``), evaluates it again against the champion
serving now, and runs deploy. Exit codes (:class:`~mlops_template.core.exitcodes.ExitCode`): 0
promoted, 3 not blessed (the champion stays, and the workspace is put back as it was found), 65
no experiment of that name, 1 failure. Commit the result as the command prints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.ops import lease
from mlops_template.ops.process import dvc
from mlops_template.ops.records import outcome_of_pipeline

if TYPE_CHECKING:
    from mlops_template.core.tasks import Task

EVALUATION = "metrics/evaluation.json"
METRICS = (("roc_auc", EVALUATION, "roc_auc"),  # binary's columns; :func:`metrics_of` gives any task's
           ("log_loss", EVALUATION, "log_loss"),
           ("value/row", EVALUATION, "value_per_row"))
WIDTH = 80
# What `dvc exp apply` and the evaluate/deploy re-run change in the workspace, put back when the
# gate refuses the experiment; the history keeps its line (an audit trail is never rewritten).
RESTORED = ("params.yaml", "dvc.lock", "metrics", "deployments")
KEPT = ("deployments/history.jsonl",)
CONTINUATION = "    "  # indent of changed params wrapped below their experiment's row


def _flat(params: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _entry(record: dict, name: str) -> dict[str, Any]:
    data = record.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    metrics = {path: (found or {}).get("data") or {} for path, found in (data.get("metrics") or {}).items()}
    return {"name": name, "params": _flat(params), "metrics": metrics}


def experiment_rows(shown: list[dict]) -> list[dict[str, Any]]:
    """The workspace, each commit and its experiments, from ``dvc exp show --json``.

    Each row knows its baseline: the commit an experiment ran from (for the workspace, the
    commit it is on), whose params it is compared with.
    """
    rows = []
    for commit in shown:
        rev = str(commit.get("rev", ""))
        label = commit.get("name") or (rev if rev == "workspace" else rev[:7])
        row = _entry(commit, label)
        rows.append(row)
        for experiment in commit.get("experiments") or []:
            for found in experiment.get("revs") or []:
                rows.append({**_entry(found, f"  {found.get('name') or str(found.get('rev', ''))[:7]}"),
                             "baseline": row["params"]})
    commits = [r for r in rows[1:] if "baseline" not in r]
    if rows and commits:
        rows[0]["baseline"] = commits[0]["params"]  # the workspace against its commit
    return rows


def changed_params(row: dict[str, Any]) -> str:
    """``key=value`` for each param that differs from the row's baseline (last key part only)."""
    baseline = row.get("baseline", row["params"])
    keys = sorted(set(row["params"]) | set(baseline))
    return " ".join(f"{k.split('.')[-1]}={row['params'].get(k)}" for k in keys
                    if json.dumps(row["params"].get(k)) != json.dumps(baseline.get(k)))


def metrics_of(task: Task) -> tuple[tuple[str, str, str], ...]:
    """The table's metric columns for ``task``: its first two headline metrics, then value per row."""
    return (*((name, EVALUATION, name) for name in task.headline_metrics[:2]),
            ("value/row", EVALUATION, "value_per_row"))


def table(rows: list[dict[str, Any]], width: int = WIDTH,
          metrics: tuple[tuple[str, str, str], ...] = METRICS) -> str:
    """Metrics, blessing and the params changed against the baseline, one line per row."""
    name_width = max([len("Experiment"), *(len(r["name"]) for r in rows)])
    header = f"{'Experiment':<{name_width}}  " + "  ".join(f"{m:>9}" for m, _, _ in metrics)
    header += "  blessed  changed params"
    lines = [header, "-" * min(width, len(header) + 10)]
    for row in rows:
        figures = []
        for _, path, key in metrics:
            value = row["metrics"].get(path, {}).get(key)
            figures.append(f"{value:>9.4f}" if isinstance(value, (int, float)) else f"{'-':>9}")
        blessed = row["metrics"].get("metrics/gate.json", {}).get("blessed")
        mark = {True: "yes", False: "no"}.get(blessed, "-")
        line = f"{row['name']:<{name_width}}  " + "  ".join(figures) + f"  {mark:>7}  {changed_params(row)}"
        if len(line) <= width:
            lines.append(line)
            continue
        # Changed params that do not fit go on indented lines below, never cut: a hidden change
        # is a wrong conclusion about what made the difference.
        lines.append(line[: len(line) - len(changed_params(row))].rstrip() + "  ↓")
        lines.extend(textwrap.wrap(changed_params(row), width, initial_indent=CONTINUATION,
                                   subsequent_indent=CONTINUATION, break_on_hyphens=False))
    return "\n".join(lines)


def show(task: Task) -> int:
    """Print the experiments table with ``task``'s metrics."""
    proc = dvc("exp", "show", "--json", capture=True)
    if proc.returncode != 0:
        print(proc.stderr.strip(), file=sys.stderr)
        return ExitCode.FAILED
    print(table(experiment_rows(json.loads(proc.stdout or "[]")), metrics=metrics_of(task)))
    return ExitCode.OK


def promote(name: str, model_name: str) -> int:
    """Apply experiment ``name``, evaluate it against the current champion, deploy if blessed.

    All under the transition lease (the deploy stage it runs works under it), so no rollback or
    canary decision lands between the evaluation against the champion and the deploy.
    """
    with lease.held("experiments promote"):
        return _promote(name, model_name)


def _promote(name: str, model_name: str) -> int:
    listed = dvc("exp", "list", "--name-only", capture=True).stdout.split()
    if name not in listed:
        older = dvc("exp", "list", "--all-commits", "--name-only", capture=True).stdout.split()
        if name in older:
            raise UserError(f"experiment {name!r} ran from an earlier commit than HEAD, so its params and "
                            f"dvc.lock predate what was committed since; run it again from HEAD "
                            f"(`dvc exp run ...`), then promote it")
        raise UserError(f"no experiment named {name!r}; `dvc exp list` shows: {listed}")
    with tempfile.TemporaryDirectory(prefix="promote-") as folder:
        saved = _save_workspace(Path(folder))
        for args in (("exp", "apply", name), ("repro", "--force", "--single-item", "evaluate"),
                     ("repro", "--force", "--single-item", "deploy")):
            if dvc(*args).returncode != 0:
                print(f"`dvc {' '.join(args)}` failed; the workspace holds the experiment", file=sys.stderr)
                return ExitCode.FAILED
            if args[:2] == ("exp", "apply"):
                _keep_history(saved)  # the experiment's copy of the history predates this workspace's
        result = outcome_of_pipeline(model_name)
        if not result["promoted"]:
            _restore_workspace(saved)
            print(f"{name}: v{result['candidate_version']} not blessed against the champion "
                  f"v{result['champion_version']}: {'; '.join(result['reasons'])}. The workspace is back as "
                  f"it was ({', '.join(RESTORED)}; the refusal stays in {KEPT[0]}).")
            return ExitCode.NOT_BLESSED
    print(f"{name}: v{result['candidate_version']} promoted. Commit it: git add params.yaml dvc.lock "
          f"metrics deployments && git commit -m 'promote experiment {name}'")
    return ExitCode.OK


def _save_workspace(folder: Path) -> Path:
    """Copy what promoting changes (:data:`RESTORED`) into ``folder``; absent paths are remembered."""
    for name in RESTORED:
        source = Path(name)
        if source.is_dir():
            shutil.copytree(source, folder / name)
        elif source.exists():
            shutil.copy2(source, folder / name)
    return folder


def _keep_history(saved: Path) -> None:
    """Put the workspace's :data:`KEPT` records back over the copies ``dvc exp apply`` wrote.

    The history is append-only: an experiment ran from an earlier state of it, and applying the
    experiment must not drop the lines written since (an earlier refusal, a rollback).
    """
    for name in KEPT:
        if (saved / name).exists():
            shutil.copy2(saved / name, name)


def _restore_workspace(saved: Path) -> None:
    """Put :data:`RESTORED` back from ``saved`` (keeping :data:`KEPT`), then DVC's outputs with them."""
    kept = {name: Path(name).read_bytes() for name in KEPT if Path(name).exists()}
    for name in RESTORED:
        target, copy = Path(name), saved / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if copy.is_dir():
            shutil.copytree(copy, target)
        elif copy.exists():
            shutil.copy2(copy, target)
    for name, data in kept.items():
        Path(name).write_bytes(data)
    if dvc("checkout", "--force", capture=True).returncode != 0:  # outputs back to the restored dvc.lock
        print("`dvc checkout` failed: run it to bring models/ and data/ back to dvc.lock", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``mlops-template experiments``."""
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="a readable table of experiments")
    chosen = sub.add_parser("promote", help="deploy a blessed experiment")
    chosen.add_argument("name")


def handle(args: argparse.Namespace) -> int:
    """Show the experiments, or promote one."""
    from mlops_template.core.contract import load_contract
    from mlops_template.core.params import load as load_params
    from mlops_template.core.tasks import task_of

    params = load_params()
    if args.command == "show":
        return show(task_of(load_contract(params.data.contract)))
    return promote(args.name, params.deploy.model_name)
