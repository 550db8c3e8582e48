"""Benchmark: what each poisoned batch would do had it reached the champion, and the gate's false alarms.

1. **Effect of each guard attack** (``tests/support/guard_attacks.py``), on Adult and statsmodels'
   ``fair`` (``tests/support/guard_data.py``): rows are shuffled per seed; a held-out pool feeds
   the batches, the rest is the raw data. As the pipeline does (in process: ``validate_frame``,
   ``split_train_test`` with a fixed salt, ``build_features`` and ``build_pipeline`` with the
   ``train``/``featurize`` settings of ``params.yaml``), a champion is trained on the raw data,
   with its served threshold chosen on its test split; the golden set is that test split. Then
   two candidates: raw data + the clean batch, raw data + the poisoned batch. What the attack
   aims at is measured on clean golden rows neither model trained on (a flip: soft recall and
   served recall of the group's positives; a backdoor: the share of golden negatives given the
   trigger value that are called positive; copies and resends: the targeted rows' score of their
   true label). The guard (``mlops_template.ops.guard.check_batch``, what ``ops/ingest`` runs)
   judges the poisoned batch, and the whole gate (``assessment.compare_on_golden`` + ``gate.decide``)
   judges the poisoned candidate against the champion, as it would had the guard let it through.
   The boiling frog is five batches; the guard sees them in turn (accepted ones join the data) and
   the gate judges each step against the champion the previous steps left.
2. **Gate false alarms** on ``fair`` and ``randhie`` (``--gate-datasets``): a fixed golden sample;
   per retrain, a champion trained on a random base sample and a candidate on base + a clean
   held-out batch, both judged on the golden sample; counts how often ``gate.slices`` or
   ``gate.answer_changes`` refuse (and the whole gate), with a 95% upper bound. Params for these
   datasets are what ``python -m mlops_template.onboard`` writes (no drop/derived, neutral value
   matrix, two small categorical slices); the gate's limits are ``params.yaml``'s.
3. **Time**: the guard on a 10,000-row Adult batch, and golden-set scoring in the gate.

Every fit runs on one thread (threadpoolctl) to share the machine; the inference-log comparison
of ``gate.answer_changes`` is off (no log). Results: ``benchmarks/results/poisoning.json``.

Usage: ``python -m benchmarks.poisoning [--quick] [--seeds N] [--retrains N] [--attack-datasets ...]
[--gate-datasets ...] [--out PATH]``. Default (5 seeds, 200 retrains per dataset): about 6 minutes
on one core; ``--seeds 10``: about 10; ``--quick`` (1 seed, 10 retrains): about 1. The gate's
false alarms on Adult: ``--attack-datasets --gate-datasets adult --retrains 100`` (about 6).
``--guard-only [--seeds 10]``: the guard's verdict on every attack and on five clean steps in turn
(the frog's control), no training and no gate (about 2 minutes for Adult and fair); JSON to
``benchmarks/results/poisoning-guard.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.guard import clean_batch, upper_bound
from mlops_template.core.config import load_params
from mlops_template.core.features import FeatureSpec, build_features, feature_spec_from
from mlops_template.core.params import EvaluateSection, GateSection
from mlops_template.ops.guard import Accepted, check_batch
from mlops_template.pipeline import evaluation as ev
from mlops_template.pipeline.assessment import compare_on_golden, score
from mlops_template.pipeline.gate import decide
from mlops_template.pipeline.onboarding import MAX_SLICE_VALUES, MAX_SLICES
from mlops_template.pipeline.splits import in_test_set, split_train_test
from mlops_template.pipeline.training import build_pipeline
from mlops_template.pipeline.validation import SOURCE_ROW_COLUMN, validate_frame
from tests.support.guard_attacks import backdoor, flipped_copies, ignored_variants, rare_value, targeted_flip
from tests.support.guard_data import LOADERS, Dataset

logger = logging.getLogger("benchmarks.poisoning")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/poisoning.json"
# As tests/unit/ops/test_guard_attacks.py: rows per batch, backdoor rows, flipped copies, resent rows
# (times each), rows per boiling-frog step and the share of the group's positives each step flips.
SIZES = {"adult": {"batch": 3000, "backdoor": 250, "copies": 300, "variants": (60, 5), "step": 1900, "frog": 0.25},
         "fair": {"batch": 1000, "backdoor": 60, "copies": 100, "variants": (20, 5), "step": 300, "frog": 0.5}}
GATE_BATCH_ROWS = {"adult": 3000, "fair": 1200, "randhie": 1000}  # as benchmarks/guard.py
GOLDEN_SHARE = 0.2
NEUTRAL_VALUE_MATRIX = {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0}  # what onboarding drafts for a binary target
NEW_CHECKS = ("slice", "answer_change")
STEPPED = ("five clean steps", "boiling frog")  # guard-only entries judged step by step
GUARD_RESULTS = REPO / "benchmarks/results/poisoning-guard.json"


def dataset_params(params: dict, data: Dataset) -> dict:
    """``params.yaml`` for Adult; for another dataset, the keys onboarding rewrites set as it sets them."""
    if data.name == "adult":
        return params
    out = copy.deepcopy(params)
    out["featurize"].update(drop=[], derived={})
    small = [c.name for c in data.contract.columns if c.role == "categorical"
             and 1 < len(c.allowed or ()) <= MAX_SLICE_VALUES]
    out["evaluate"].update(value_matrix=dict(NEUTRAL_VALUE_MATRIX), slices=small[:MAX_SLICES])
    return out


@dataclass
class Model:
    """A fitted pipeline, its served threshold (best on its own test split) and its rolling test set."""

    pipeline: Any
    spec: FeatureSpec
    threshold: float
    test: pd.DataFrame
    positive_share: float

    def proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Positive-class probability, as the service computes it."""
        return self.pipeline.predict_proba(build_features(frame, self.spec))[:, 1]


class Lab:
    """One dataset: its params, feature spec and the pipeline's train/evaluate steps, in process."""

    def __init__(self, data: Dataset, params: dict) -> None:
        self.data, self.params, self.contract = data, dataset_params(params, data), data.contract
        cfg = self.params["featurize"]
        self.spec = feature_spec_from(self.contract, cfg.get("drop"), cfg.get("derived"))
        self.inputs = [c for c in self.contract.column_names if c != self.contract.target]
        self.thresholds = self.params["ingest"]
        self.evaluate_cfg = EvaluateSection.parse(self.params["evaluate"])
        self.gate_cfg = GateSection.parse(self.params["gate"])
        self.fit_seconds: list[float] = []

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """0/1 labels of typed rows."""
        return (frame[self.contract.target] == self.contract.positive_class).astype(int).to_numpy()

    def typed(self, *raw: pd.DataFrame) -> pd.DataFrame:
        """Raw batches concatenated and validated, as the validate stage reads ``data/raw/``."""
        return validate_frame(pd.concat(raw, ignore_index=True), self.contract).valid

    def train(self, frame: pd.DataFrame, salt: str) -> Model:
        """The featurize split, the train stage's fit and the evaluate stage's threshold."""
        f, t = self.params["featurize"], self.params["train"]
        train, test, _ = split_train_test(frame, self.contract.target, f["test_size"], f["seed"], 1, salt, self.inputs)
        pipeline = build_pipeline(self.spec, t["estimator"], t["hyperparameters"].get(t["estimator"], {}), t["seed"])
        started = time.process_time()
        pipeline.fit(build_features(train, self.spec), self.labels(train))
        self.fit_seconds.append(time.process_time() - started)
        model = Model(pipeline, self.spec, 0.0, test, float(self.labels(train).mean()))
        vm = self.params["evaluate"]["value_matrix"]
        model.threshold = ev.best_threshold(self.labels(test), model.proba(test), vm)[0]
        return model

    def gate(self, champion: Model, candidate: Model, golden: pd.DataFrame) -> dict:
        """The evaluate stage's gate: rolling test set, baseline, golden-set comparison (no inference log)."""
        vm = self.params["evaluate"]["value_matrix"]
        labels = self.labels(candidate.test)
        metrics = score(labels, candidate.proba(candidate.test), vm)
        champion_metrics = score(labels, champion.proba(candidate.test), vm)
        baseline = ev.baseline_metrics(labels, candidate.positive_share, vm)
        cpu = time.process_time()
        result = compare_on_golden(self.contract, self.evaluate_cfg, self.gate_cfg, golden, candidate.proba,
                                   metrics["threshold"], champion.proba, champion.threshold)
        cpu = time.process_time() - cpu
        decision = decide(metrics, champion_metrics, self.params["gate"], baseline, result)
        failed = [c for c in decision.checks if c["passed"] is False]
        slices, groups = result["slices"], result["answer_changes"].get("golden set", {}).get("groups", [])
        column, value = self.data.group
        return {"blessed": decision.blessed, "seconds": result["seconds"], "cpu_seconds": cpu,
                "golden_rows": len(golden),
                "failed": [f"{c['kind']} {c.get('slice') or c.get('group') or c['metric']}" for c in failed],
                "new_checks_failed": any(c["kind"] in NEW_CHECKS for c in failed),
                "group": {"slice": next(({"loss": x["loss"], "z": x["z"]} for x in slices
                                         if (x["column"], x["value"]) == (column, value)), None),
                          "shift": next(({"shift": x["shift"], "z": x["z"]} for x in groups
                                         if (x["column"], x["value"]) == (column, value)), None)},
                "needed": self.needed(slices, groups),
                "worst_slices": [{k: x[k] for k in ("column", "value", "counted", "loss", "z")}
                                 for x in sorted(slices, key=lambda x: -x["loss"])[:3]],
                "worst_groups": [{k: x[k] for k in ("column", "value", "rows", "shift", "z")}
                                 for x in sorted(groups, key=lambda x: -abs(x["shift"]))[:3]]}

    def needed(self, slices: list[dict], groups: list[dict]) -> dict[str, float]:
        """Each limit a retrain would need to pass its new checks, the other limit of the pair kept.

        ``max_drop``: the largest slice loss with z at least ``min_z``; ``slice_min_z``: the largest
        z of a slice losing more than ``max_drop``; likewise for the answer changes' shift and |z|.
        """
        cs, ca = self.gate_cfg.slices, self.gate_cfg.answer_changes
        return {"max_drop": max([x["loss"] for x in slices if x["z"] >= cs.min_z], default=0.0),
                "slice_min_z": max([x["z"] for x in slices if x["loss"] > cs.max_drop], default=0.0),
                "max_shift": max([abs(x["shift"]) for x in groups if abs(x["z"]) >= ca.min_z], default=0.0),
                "shift_min_z": max([abs(x["z"]) for x in groups if abs(x["shift"]) >= ca.max_shift], default=0.0)}

    def guard(self, batch: pd.DataFrame, accepted: Accepted, seed: int) -> tuple[list[str], pd.DataFrame]:
        """Failed guard checks (empty: accepted) and the batch's valid rows."""
        report, valid = check_batch("batch", batch, accepted, self.contract, {**self.thresholds, "seed": seed},
                                    self.data.model_columns)
        return [c.name for c in report.checks if not c.passed], valid


def group_recall(lab: Lab, model: Model, golden: pd.DataFrame) -> dict:
    """Soft recall (mean score) and served recall of the targeted group's positives on golden rows."""
    column, value = lab.data.group
    rows = golden[(golden[column].astype(str) == value) & (lab.labels(golden) == 1)]
    proba = model.proba(rows)
    return {"soft_recall": float(proba.mean()), "recall": float((proba >= model.threshold).mean()), "rows": len(rows)}


def own_label_score(lab: Lab, model: Model, rows: pd.DataFrame) -> dict:
    """Mean score of each row's true label, and the share answered wrongly at the served threshold."""
    y, proba = lab.labels(rows), model.proba(rows)
    return {"true_label_score": float(np.mean(np.where(y == 1, proba, 1 - proba))),
            "wrong": float(np.mean((proba >= model.threshold).astype(int) != y)), "rows": len(rows)}


def attack_seed(lab: Lab, seed: int) -> dict[str, dict]:
    """Every attack on one shuffle of the dataset: guard verdict, gate verdict, effect clean vs poisoned."""
    data, size = lab.data, SIZES[lab.data.name]
    salt = f"poisoning-benchmark-salt-{seed:04d}"
    order = np.random.default_rng(seed).permutation(len(data.raw))
    pool = max(size["batch"], 5 * size["step"])
    held, raw = (data.raw.iloc[order[:pool]].reset_index(drop=True), data.raw.iloc[order[pool:]].reset_index(drop=True))
    accepted = Accepted.from_frame(lab.typed(raw), data.contract)
    champion = lab.train(accepted.frame, salt)
    golden = champion.test  # the golden set is frozen from the champion's test split
    batch = held.head(size["batch"])
    clean = lab.train(lab.typed(raw, batch), salt)
    out: dict[str, dict] = {}

    def run(name: str, poisoned: pd.DataFrame, effect: Callable[[Model], dict]) -> Model:
        model = lab.train(lab.typed(raw, poisoned), salt)
        out[name] = {"guard": lab.guard(poisoned, accepted, seed)[0], "gate": lab.gate(champion, model, golden),
                     "clean": effect(clean), "poisoned": effect(model)}
        return model

    out["clean batch"] = {"guard": lab.guard(batch, accepted, seed)[0], "gate": lab.gate(champion, clean, golden),
                          "clean": group_recall(lab, champion, golden), "poisoned": group_recall(lab, clean, golden)}
    run("targeted flip", targeted_flip(batch, data), lambda m: group_recall(lab, m, golden))
    column, value = rare_value(data, accepted)
    triggered = golden[lab.labels(golden) == 0].copy()
    triggered[column] = value

    def called_positive(m: Model) -> dict:
        return {"called_positive": float((m.proba(triggered) >= m.threshold).mean()), "rows": len(triggered),
                "trigger": f"{column}={value}"}

    run("backdoor trigger", backdoor(batch, data, accepted, size["backdoor"]), called_positive)
    copied = accepted.frame.sample(size["copies"], random_state=seed)  # the rows flipped_copies copies
    run("flipped copies", flipped_copies(batch, data, accepted, size["copies"], seed),
        lambda m: own_label_score(lab, m, copied))
    rows, copies = size["variants"]
    resent = ignored_variants(batch, data, rows, copies, seed)
    sources = lab.typed(batch.iloc[:rows])
    run("near-duplicate resends", resent, lambda m: own_label_score(lab, m, sources))
    out["near-duplicate resends"]["poisoned"]["both_sides"] = both_sides(lab, resent.iloc[-rows * copies:], rows, salt)
    out["boiling frog"] = boiling_frog(lab, seed, salt, raw, held, accepted, champion, golden)
    return out


def both_sides(lab: Lab, variants: pd.DataFrame, rows: int, salt: str) -> float:
    """Share of the resent rows (valid ones) with variants in both the training and the test split."""
    result = validate_frame(variants.reset_index(drop=True), lab.contract)
    valid = np.ones(len(variants), bool)
    valid[result.rejected[SOURCE_ROW_COLUMN].to_numpy(int) - 2] = False  # validation numbers rows from 2
    sides = np.zeros(len(variants), bool)
    f = lab.params["featurize"]
    sides[valid] = in_test_set(result.valid, f["test_size"], f["seed"], salt, lab.inputs)
    sides, valid = sides.reshape(-1, rows), valid.reshape(-1, rows).all(0)
    return float(np.mean((sides.any(0) & ~sides.all(0))[valid]))


def frog_batches(lab: Lab, held: pd.DataFrame) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The five clean steps of held-out rows and the same steps with a share of the group's positives flipped."""
    size, data = SIZES[lab.data.name], lab.data
    steps = [held.iloc[i * size["step"]:(i + 1) * size["step"]].reset_index(drop=True) for i in range(5)]
    return steps, [targeted_flip(s, data, size["frog"], seed=i) for i, s in enumerate(steps)]


def guard_in_turn(lab: Lab, batches: list[pd.DataFrame], accepted: Accepted, seed: int) -> list[str]:
    """The guard on each batch in turn (accepted ones join the data): ``check@step`` per failed check."""
    stopped, seen = [], accepted
    for i, batch in enumerate(batches):
        failed, valid = lab.guard(batch, seen, seed)
        stopped += [f"{name}@{i + 1}" for name in failed]
        if not failed:
            seen = seen.extend(valid, lab.data.contract)
    return stopped


def guard_seed(lab: Lab, seed: int) -> dict[str, dict]:
    """Every attack's guard verdict on one shuffle, as :func:`attack_seed` builds them, without training.

    Also the five clean steps in turn (the control for the frog's cumulative checks).
    """
    data, size = lab.data, SIZES[lab.data.name]
    order = np.random.default_rng(seed).permutation(len(data.raw))
    pool = max(size["batch"], 5 * size["step"])
    held, raw = (data.raw.iloc[order[:pool]].reset_index(drop=True), data.raw.iloc[order[pool:]].reset_index(drop=True))
    accepted = Accepted.from_frame(lab.typed(raw), data.contract)
    batch = held.head(size["batch"])
    rows, copies = size["variants"]
    steps, poisoned = frog_batches(lab, held)
    attacks = {"clean batch": batch, "targeted flip": targeted_flip(batch, data),
               "backdoor trigger": backdoor(batch, data, accepted, size["backdoor"]),
               "flipped copies": flipped_copies(batch, data, accepted, size["copies"], seed),
               "near-duplicate resends": ignored_variants(batch, data, rows, copies, seed)}
    out = {name: {"guard": lab.guard(b, accepted, seed)[0]} for name, b in attacks.items()}
    out["five clean steps"] = {"guard": guard_in_turn(lab, steps, accepted, seed)}
    out["boiling frog"] = {"guard": guard_in_turn(lab, poisoned, accepted, seed)}
    return out


def summarise_guard(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Per attack: seeds the guard accepted, how often each check failed, the first step stopped per seed."""
    summary = {}
    for attack in per_seed[0]:
        runs = [s[attack]["guard"] for s in per_seed]
        checks = Counter(name for r in runs for name in {n.split("@")[0] for n in r})
        first = [min((int(n.split("@")[1]) for n in r if "@" in n), default=None) for r in runs]
        summary[attack] = {"seeds": len(runs), "guard_accepted": sum(not r for r in runs), "guard_failed": dict(checks)}
        if attack in STEPPED:
            summary[attack]["first_step_stopped"] = first
    return summary


def boiling_frog(lab: Lab, seed: int, salt: str, raw: pd.DataFrame, held: pd.DataFrame, accepted: Accepted,
                 champion: Model, golden: pd.DataFrame) -> dict:
    """Five batches each flipping a share of the group's positives: guard in turn, gate per step."""
    steps, poisoned = frog_batches(lab, held)
    stopped = guard_in_turn(lab, poisoned, accepted, seed)
    verdicts, current, model = [], champion, champion
    for i in range(1, 6):
        model = lab.train(lab.typed(raw, *poisoned[:i]), salt)
        verdict = lab.gate(current, model, golden)
        verdicts.append(verdict)
        if verdict["blessed"]:
            current = model
    clean = lab.train(lab.typed(raw, *steps), salt)
    worst = max(verdicts, key=lambda v: (v["group"]["slice"] or {"loss": -1.0})["loss"])
    gate = {"blessed": all(v["blessed"] for v in verdicts), "seconds": verdicts[-1]["seconds"],
            "cpu_seconds": verdicts[-1]["cpu_seconds"], "golden_rows": len(golden),
            "failed": [f"{f}@{i + 1}" for i, v in enumerate(verdicts) for f in v["failed"]],
            "new_checks_failed": any(v["new_checks_failed"] for v in verdicts), "group": worst["group"],
            "steps_blessed": [v["blessed"] for v in verdicts]}
    return {"guard": stopped, "gate": gate, "clean": group_recall(lab, clean, golden),
            "poisoned": group_recall(lab, model, golden), "after_gate": group_recall(lab, current, golden)}


def median(values: list[float]) -> float:
    """The median, rounded for the table."""
    return round(float(statistics.median(values)), 4)


def summarise(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Per attack: how often each guard check and gate check failed, and median effects."""
    summary = {}
    for attack in per_seed[0]:
        runs = [s[attack] for s in per_seed]
        guard = Counter(name for r in runs for name in {n.split("@")[0] for n in r["guard"]})
        gate = Counter(name for r in runs for name in {n.split("@")[0] for n in r["gate"]["failed"]})
        effect = {}
        for when in ("clean", "poisoned", "after_gate"):
            if when in runs[0]:
                effect[when] = {k: median([r[when][k] for r in runs]) for k, v in runs[0][when].items()
                                if isinstance(v, (int, float))}
        extra: dict[str, Any] = {k: ", ".join(sorted({r["poisoned"][k] for r in runs}))
                                 for k, v in runs[0]["poisoned"].items() if isinstance(v, str)}
        if "steps_blessed" in runs[0]["gate"]:  # per seed, the steps (1-5) the gate refused
            extra["gate_steps"] = [[i + 1 for i, ok in enumerate(r["gate"]["steps_blessed"]) if not ok] for r in runs]
        for part, keys in (("slice", ("loss", "z")), ("shift", ("shift", "z"))):
            found = [r["gate"]["group"][part] for r in runs if r["gate"]["group"][part] is not None]
            if found:
                extra[f"gate_group_{part}"] = {k: median([f[k] for f in found]) for k in keys}
        summary[attack] = {"seeds": len(runs), "guard_accepted": sum(not r["guard"] for r in runs),
                           "guard_failed": dict(guard), "guard_steps": [r["guard"] for r in runs],
                           "gate_blessed": sum(r["gate"]["blessed"] for r in runs), "gate_failed": dict(gate),
                           "effect": effect, **extra}
    return summary


def gate_false_alarms(lab: Lab, retrains: int) -> dict:
    """Clean retrains judged on a fixed golden sample: how often the new gate checks refuse."""
    data, rows = lab.data, GATE_BATCH_ROWS[lab.data.name]
    valid = lab.typed(data.raw)
    fixed = np.random.default_rng(0).random(len(valid)) < GOLDEN_SHARE
    golden, pool = valid[fixed].reset_index(drop=True), valid[~fixed].reset_index(drop=True)
    runs = []
    for seed in range(retrains):
        salt = f"poisoning-benchmark-salt-{seed:04d}"
        order = np.random.default_rng(1000 + seed).permutation(len(pool))
        base = pool.iloc[order[rows:]]
        champion = lab.train(base, salt)
        candidate = lab.train(pd.concat([base, pool.iloc[order[:rows]]], ignore_index=True), salt)
        runs.append(lab.gate(champion, candidate, golden))
        if runs[-1]["failed"]:
            logger.info("%s retrain %d: %s", data.name, seed, runs[-1]["failed"])
    new = sum(r["new_checks_failed"] for r in runs)
    refused = sum(not r["blessed"] for r in runs)
    needed = {k: float(np.quantile([r["needed"][k] for r in runs], 0.98)) for k in runs[0]["needed"]}
    return {"retrains": retrains, "batch_rows": rows, "golden_rows": len(golden), "base_rows": len(pool) - rows,
            "new_check_refusals": new, "rate": new / retrains, "rate_upper_95": round(upper_bound(new, retrains), 4),
            "gate_refusals": refused, "gate_rate": refused / retrains,
            "by_check": dict(Counter(f for r in runs for f in r["failed"])),
            "limits_passing_98pct": {k: round(v, 4) for k, v in needed.items()},
            "needed_per_retrain": {k: [round(r["needed"][k], 4) for r in runs] for k in needed},
            "worst_slices": sorted((x for r in runs for x in r["worst_slices"]), key=lambda x: -x["loss"])[:5],
            "worst_groups": sorted((x for r in runs for x in r["worst_groups"]), key=lambda x: -abs(x["shift"]))[:5],
            "golden_seconds": median([r["seconds"] for r in runs]),
            "golden_cpu_seconds": median([r["cpu_seconds"] for r in runs])}


def guard_time(thresholds: dict, runs: int) -> dict:
    """Median wall and CPU seconds of the guard on a 10,000-row Adult batch (as benchmarks/guard.py)."""
    data = LOADERS["adult"]()
    batch, accepted = clean_batch(data, 10_000, 12345)
    check_batch("warm-up", batch.head(500), accepted, data.contract, thresholds, data.model_columns)
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        check_batch("timed", batch, accepted, data.contract, thresholds, data.model_columns)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"rows": 10_000, "accepted_rows": len(accepted.frame), "runs": runs, "seconds": median(wall),
            "cpu_seconds": median(cpu)}


def print_attacks(name: str, summary: dict[str, dict]) -> None:
    """Per attack: the effect (medians), then which guard checks stop it and what the gate says."""
    print(f"\n{name}: effect had the attack reached the champion, on clean golden rows "
          f"(median of {summary['clean batch']['seeds']} seed(s); clean batch: champion -> clean candidate)")
    for attack, s in summary.items():
        n = s["seeds"]
        clean, poisoned = s["effect"]["clean"], s["effect"]["poisoned"]
        shown = [f"{k} {clean[k]:.3f} -> {poisoned[k]:.3f}" for k in poisoned if k in clean and k != "rows"]
        shown += [f"{k} {poisoned[k]:.3f}" for k in poisoned if k not in clean]
        if "after_gate" in s["effect"]:
            shown.append(f"soft_recall of the champion the gate left {s['effect']['after_gate']['soft_recall']:.3f}")
        what = f" [{s['trigger']}]" if "trigger" in s else ""
        print(f"  {attack}{what}: {'; '.join(shown)} ({clean.get('rows', 0):.0f} rows)")
        guard = ", ".join(f"{k} {v}/{n}" for k, v in s["guard_failed"].items()) or "none"
        gate = ", ".join(f"{k} {v}/{n}" for k, v in s["gate_failed"].items()) or "none"
        first = [min((int(x.split("@")[1]) for x in g), default=None) if "@" in "".join(g) else None
                 for g in s["guard_steps"]] if attack == "boiling frog" else None
        print(f"      guard: accepted {s['guard_accepted']}/{n}, failed checks: {guard}"
              + (f"; first step stopped per seed {first} (None: all five accepted)" if first else ""))
        print(f"      gate (had the guard let it in): blessed {s['gate_blessed']}/{n}, failed checks: {gate}")
        if attack in ("targeted flip", "boiling frog"):
            sl, sh = s.get("gate_group_slice"), s.get("gate_group_shift")
            shown = [f"slice loss {sl['loss']:.4f} (z {sl['z']:.1f})" if sl else "slice under min_rows",
                     f"score shift {sh['shift']:+.4f} (z {sh['z']:+.1f})" if sh else "group under min_rows"]
            steps = f"; steps refused per seed {s['gate_steps']}" if "gate_steps" in s else ""
            print(f"      gate on the targeted group (median{', worst step' if 'gate_steps' in s else ''}): "
                  f"{', '.join(shown)}{steps}")


def guard_only(datasets: list[str], seeds: int, out: Path) -> None:
    """``--guard-only``: every attack through the guard on ``seeds`` shuffles per dataset; print and write."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlops_template").setLevel(logging.ERROR)
    started = time.monotonic()
    params = load_params(REPO / "params.yaml")
    results: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "seeds": seeds, "attacks": {}}
    for name in datasets:
        lab = Lab(LOADERS[name](), params)
        per_seed = [guard_seed(lab, seed) for seed in range(seeds)]
        summary = summarise_guard(per_seed)
        results["attacks"][name] = {"sizes": SIZES[name], "summary": summary, "per_seed": per_seed}
        print(f"\n{name}: the guard on every attack ({seeds} shuffles)")
        for attack, s in summary.items():
            failed = ", ".join(f"{k} {v}/{s['seeds']}" for k, v in s["guard_failed"].items()) or "none"
            steps = f"; first step stopped per seed {s['first_step_stopped']}" if "first_step_stopped" in s else ""
            print(f"  {attack}: accepted {s['guard_accepted']}/{s['seeds']}, failed checks: {failed}{steps}")
    results["seconds"] = round(time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out} ({results['seconds']} s)")


def main() -> None:
    """Parse arguments, measure, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed per attack dataset, 10 retrains per dataset")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per attack dataset (default 5)")
    parser.add_argument("--retrains", type=int, default=None, help="clean retrains per dataset (default 200)")
    parser.add_argument("--attack-datasets", nargs="*", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--gate-datasets", nargs="*", default=["fair", "randhie"], choices=list(LOADERS))
    parser.add_argument("--guard-only", action="store_true",
                        help=f"only the guard's verdict on every attack (no training, no gate); JSON to "
                             f"{GUARD_RESULTS.relative_to(REPO)} unless --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where the JSON goes (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args()
    if args.guard_only:
        guard_only(args.attack_datasets, args.seeds or 10, args.out or GUARD_RESULTS)
        return
    args.out = args.out or RESULTS
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlops_template").setLevel(logging.ERROR)
    logger.setLevel(logging.INFO)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    started = time.monotonic()
    params = load_params(REPO / "params.yaml")
    seeds = 1 if args.quick else args.seeds or 5
    retrains = args.retrains or (10 if args.quick else 200)
    results: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": 1,
                               "gate": {k: params["gate"][k] for k in ("slices", "answer_changes")},
                               "attacks": {}, "gate_false_alarms": {}}
    golden_seconds, fits = {}, {}
    for name in args.attack_datasets:
        lab = Lab(LOADERS[name](), params)
        per_seed = []
        for seed in range(seeds):
            per_seed.append(attack_seed(lab, seed))
            logger.info("%s seed %d done (%.0f s so far)", name, seed, time.monotonic() - started)
        results["attacks"][name] = {"sizes": SIZES[name], "summary": summarise(per_seed), "per_seed": per_seed}
        gates = [r[a]["gate"] for r in per_seed for a in r]
        golden_seconds[name] = {"rows": median([g["golden_rows"] for g in gates]),
                                "seconds": median([g["seconds"] for g in gates]),
                                "cpu_seconds": median([g["cpu_seconds"] for g in gates])}
        fits[name] = median(lab.fit_seconds)
        print_attacks(name, results["attacks"][name]["summary"])
    print(f"\ngate false alarms on clean retrains ({retrains} per dataset; new checks: gate.slices, "
          "gate.answer_changes)")
    for name in args.gate_datasets:
        lab = Lab(LOADERS[name](), params)
        f = gate_false_alarms(lab, retrains)
        results["gate_false_alarms"][name] = f
        fits[name] = median(lab.fit_seconds)
        golden_seconds.setdefault(name, {"rows": f["golden_rows"], "seconds": f["golden_seconds"],
                                         "cpu_seconds": f["golden_cpu_seconds"]})
        print(f"  {name}: {f['new_check_refusals']}/{f['retrains']} refused by the new checks ({f['rate']:.1%}, 95% "
              f"upper bound {f['rate_upper_95']:.1%}); whole gate {f['gate_refusals']}/{f['retrains']}; "
              f"{f['batch_rows']}-row batches, {f['base_rows']} base rows, {f['golden_rows']} golden rows")
        if f["by_check"]:
            print(f"    failed checks: {f['by_check']}")
        print(f"    98% of retrains would pass with each limit at (the other of its pair kept): "
              f"{f['limits_passing_98pct']}")
        if f["rate"] > 0.02:
            print(f"    worst slices: {f['worst_slices'][:3]}\n    worst groups: {f['worst_groups'][:3]}")
    timing = guard_time(params["ingest"], 1 if args.quick else 3)
    results["timing"] = {"guard_10k": timing, "golden_scoring_seconds": golden_seconds, "fit_cpu_seconds": fits,
                         "load_average": round(os.getloadavg()[0], 1)}
    print(f"\ntime: the guard on a 10,000-row Adult batch against {timing['accepted_rows']} accepted rows: "
          f"{timing['seconds']} s wall, {timing['cpu_seconds']} s CPU (median of {timing['runs']})"
          + (f", {timing['cpu_seconds'] / fits['adult']:.2f}x one Adult training fit ({fits['adult']} s CPU)"
             if "adult" in fits else ""))
    for name, g in golden_seconds.items():
        print(f"  golden-set scoring in the gate, {name} ({g['rows']:.0f} golden rows, both models, slices and "
              f"answer changes): {g['seconds']} s wall, {g['cpu_seconds']:.3f} s CPU (median); one fit "
              f"{fits[name]} s CPU")
    results["seconds"] = round(time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
