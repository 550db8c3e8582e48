"""Candidate against champion on the same rows: per-slice losses and where the answers changed.

Both checks are paired: the two models answer the very same rows (the golden set), so what is
compared is each row's difference, and clean retrains (whose differences are small and scattered)
are told apart from a targeted change (differences that pile up in one group).

- **Slice check.** For each slice (a value of a categorical column), the task's slice metric is a
  mean of a per-row "goodness" over the rows it counts (for ``recall``: the slice's positives,
  goodness 1 when the model answers positive). The loss is champion minus candidate. A slice
  fails when the loss exceeds ``max_drop`` *and* is beyond noise: ``z = sum(d) / sqrt(sum(d^2))``
  over the per-row differences ``d`` (McNemar's statistic for 0/1 goodness) is at least
  ``min_z``. A few rows flipping in a small slice never fail it; a loss spread over many rows does.
- **Answer changes.** Each row's score shift (candidate minus champion) is compared with the mean
  shift of rows the champion scored alike (bins of its score), and a group (a categorical value
  or a quantile range of a numeric column) is flagged when its mean residual shift reaches
  ``max_shift`` and its ``|z|`` reaches ``min_z``. The shift of the score, not of the 0/1
  answer, is what is tested: a clean retrain moves the decision threshold a little, which flips
  every borderline row the same way and piles flips into whichever groups sit near the
  threshold (measured: up to 7% of a 209-row group on clean retrains, against 2% on the group a
  label flip targeted), while scores of rows scored alike move together only when something
  aimed at them. The answers that changed are counted per group and shown as examples.

Per task (:data:`SLICE_METRICS`, :data:`SIGNED_CHANGES`, :data:`SCORE_SHIFTS`; a new task adds
its three entries, the checks stay as they are), chosen so that each reads like binary's:

- **binary**: the score is the positive-class probability, the answer 0/1 at the model's threshold.
- **multiclass**: the answer is the most probable class. The score shift is how much the candidate
  moved the probability *of the champion's answer* (candidate's minus champion's): it needs no label,
  so it works on the inference log too, and a change aimed at one group (pushing its rows off their
  class) shows as a negative shift there; rows are binned by the champion's confidence. Slice metrics:
  ``accuracy`` (served answers) and ``true_class_probability`` (the probability given to the true
  class: accuracy averaged over every decision rule, as soft_recall is for binary). An answer that
  changed counts as "down" (the champion's answer lost), since classes have no order.
- **regression**: the answer is the prediction; the score is its rank among the training targets
  (the training target's quantiles, interpolated: 0 at its minimum, 1 at its maximum), so a score
  lies in [0, 1] as a probability does and ``max_shift`` means what it means for binary whatever the
  target's unit (measured on sklearn's diabetes data: a retrain on 15% more rows moved no group's mean
  rank by more than 0.012; answers one standard deviation higher in one group moved its rank 0.18).
  Slice metric: ``neg_abs_error``, minus the absolute error in units of the training target's
  standard deviation (:attr:`Answers.scale`), so ``max_drop`` fits prices and durations alike. An
  answer "changed" when it moved by at least :data:`REGRESSION_CHANGE` standard deviations (every
  float moves a little).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

MISSING = "<missing>"
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Answers:
    """What one model says about each row: its score and the answer it serves."""

    score: np.ndarray      # binary: positive-class probability; multiclass: top probability; regression: rank
    decision: np.ndarray   # binary: 1 when score >= threshold; multiclass: class index; regression: the prediction
    proba: np.ndarray | None = None   # multiclass: (n, K) probabilities in the contract's class order
    scale: float = 1.0                # regression: the training target's standard deviation


REGRESSION_CHANGE = 0.1  # regression: an answer moved by this many target standard deviations has changed


def _everyone(y: np.ndarray) -> np.ndarray:
    return np.ones(len(y), dtype=bool)


def _true_class_probability(y: np.ndarray, a: Answers) -> tuple[np.ndarray, np.ndarray]:
    if a.proba is None:
        raise ValueError("true_class_probability needs the class probabilities (Answers.proba)")
    return _everyone(y), a.proba[np.arange(len(y)), np.asarray(y, dtype="int64")]


# Per slice metric: (rows it counts, goodness of each row). Goodness is higher-is-better.
SliceMetric = Callable[[np.ndarray, Answers], tuple[np.ndarray, np.ndarray]]
SLICE_METRICS: dict[str, dict[str, SliceMetric]] = {
    "binary": {
        # Recall (TPR) at each model's own threshold: what serving does; a targeted flip lowers it.
        "recall": lambda y, a: (y == 1, a.decision.astype("float64")),
        # Mean positive-class score of the positives: recall averaged over every threshold.
        "soft_recall": lambda y, a: (y == 1, a.score.astype("float64")),
        "accuracy": lambda y, a: (np.ones(len(y), dtype=bool), (a.decision == y).astype("float64")),
    },
    "multiclass": {  # the first is what onboarding sets for a new multiclass project
        "true_class_probability": _true_class_probability,
        "accuracy": lambda y, a: (_everyone(y), (a.decision == y).astype("float64")),
    },
    "regression": {
        "neg_abs_error": lambda y, a: (_everyone(y), -np.abs(a.decision.astype("float64") - y) / a.scale),
    },
}
#: The slice metric of what the service answers, reported beside the configured one.
SERVED_SLICE_METRIC = {"binary": "recall", "multiclass": "accuracy", "regression": "neg_abs_error"}


def _champion_answer_shift(champion: Answers, candidate: Answers) -> np.ndarray:
    if champion.proba is None or candidate.proba is None:
        raise ValueError("a multiclass score shift needs both models' class probabilities (Answers.proba)")
    rows, answer = np.arange(len(champion.decision)), np.asarray(champion.decision, dtype="int64")
    return candidate.proba[rows, answer] - champion.proba[rows, answer]


Change = Callable[[Answers, Answers], np.ndarray]
SIGNED_CHANGES: dict[str, Change] = {
    "binary": lambda old, new: new.decision.astype("float64") - old.decision.astype("float64"),
    "multiclass": lambda old, new: -(new.decision != old.decision).astype("float64"),
    "regression": lambda old, new: np.where(np.abs(new.decision - old.decision) >= REGRESSION_CHANGE * old.scale,
                                            np.sign(new.decision - old.decision), 0.0),
}
SCORE_SHIFTS: dict[str, Change] = {
    "binary": lambda old, new: new.score.astype("float64") - old.score.astype("float64"),
    "multiclass": _champion_answer_shift,
    "regression": lambda old, new: new.score.astype("float64") - old.score.astype("float64"),
}


def _of_task(table: dict[str, Change], task: str) -> Change:
    if task not in table:
        raise ValueError(f"answer changes are not defined for a {task!r} task; known: {sorted(table)}")
    return table[task]


def signed_change(task: str, champion: Answers, candidate: Answers) -> np.ndarray:
    """Per row, how the served answer moved: +1 up, -1 down, 0 unchanged (see the module docstring per task)."""
    return _of_task(SIGNED_CHANGES, task)(champion, candidate)


def score_shift(task: str, champion: Answers, candidate: Answers) -> np.ndarray:
    """Per row, how the score moved (binary: the positive-class probability; see the module docstring)."""
    return _of_task(SCORE_SHIFTS, task)(champion, candidate)


def slice_metric(task: str, name: str) -> SliceMetric:
    """The slice metric ``name`` of ``task``; ValueError lists the known ones."""
    known = SLICE_METRICS.get(task, {})
    if name not in known:
        raise ValueError(f"gate.slices.metric must be one of {sorted(known)} for a {task} task, got {name!r}")
    return known[name]


def _z(diff: np.ndarray) -> float:
    """Self-normalised sum: McNemar's z for 0/1 data, a sign-symmetric t for continuous data."""
    scale = math.sqrt(float(np.sum(diff * diff)))
    return float(np.sum(diff)) / scale if scale > 0 else 0.0


def _keys(column: pd.Series) -> np.ndarray:
    return column.astype(object).where(column.notna(), MISSING).map(str).to_numpy()


def categorical_groups(frame: pd.DataFrame, columns: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """``(column, value, mask)`` for every value of every column, missing values as ``<missing>``."""
    groups = []
    for column in columns:
        keys = _keys(frame[column])
        groups += [(column, value, keys == value) for value in sorted(set(keys))]
    return groups


def numeric_groups(frame: pd.DataFrame, columns: list[str], bins: int) -> list[tuple[str, str, np.ndarray]]:
    """``(column, "[low, high]", mask)`` for quantile ranges of each numeric column (ties merge ranges)."""
    groups = []
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            continue
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
        index = np.searchsorted(edges[1:-1], values, side="right")
        for b in range(max(len(edges) - 1, 1)):
            low, high = edges[b], edges[min(b + 1, len(edges) - 1)]
            groups.append((column, f"[{low:g}, {high:g}]", (index == b) & np.isfinite(values)))
    return groups


def slice_losses(task: str, metric: str, labels: np.ndarray, champion: Answers, candidate: Answers,
                 groups: list[tuple[str, str, np.ndarray]], min_rows: dict[str, int]) -> list[dict]:
    """The slice metric of both models on each group with at least ``min_rows[column]`` rows."""
    measure = slice_metric(task, metric)
    counted, good_old = measure(labels, champion)
    _, good_new = measure(labels, candidate)
    rows = []
    for column, value, mask in groups:
        n = int(mask.sum())
        if n < min_rows.get(column, 0):
            continue
        take = mask & counted
        if not take.any():
            continue
        diff = good_old[take] - good_new[take]
        rows.append({"column": column, "value": value, "rows": n, "counted": int(take.sum()),
                     "champion": round(float(good_old[take].mean()), 6),
                     "candidate": round(float(good_new[take].mean()), 6),
                     "loss": round(float(diff.mean()), 6), "z": round(_z(diff), 3)})
    return rows


def slice_checks(losses: list[dict], metric: str, max_drop: float, min_z: float) -> list[dict]:
    """Gate checks: one per failing slice, else one passing check that covers them all."""
    key = "gate.slices"
    failed = [s for s in losses if s["loss"] > max_drop and s["z"] >= min_z]
    checks = [{"kind": "slice", "metric": metric, "key": f"{key}.max_drop", "slice": f"{s['column']}={s['value']}",
               "threshold": {"max_drop": max_drop, "min_z": min_z}, "observed": s["loss"], "skipped": False,
               "passed": False, "champion": s["champion"], "challenger": s["candidate"],
               "reason": f"slice {s['column']}={s['value']}: {metric} {s['champion']:.4f} (champion) -> "
                         f"{s['candidate']:.4f} on {s['counted']} golden rows, a loss of {s['loss']:.4f} above "
                         f"{max_drop:g} beyond noise (z {s['z']:.2f} >= {min_z:g})"}
              for s in failed]
    if failed:
        return checks
    worst = max(losses, key=lambda s: s["loss"], default=None)
    detail = (f"; largest loss {worst['loss']:.4f} on {worst['column']}={worst['value']} (z {worst['z']:.2f})"
              if worst else "")
    return [{"kind": "slice", "metric": metric, "key": f"{key}.max_drop", "slice": None,
             "threshold": {"max_drop": max_drop, "min_z": min_z}, "observed": worst["loss"] if worst else None,
             "skipped": not losses, "passed": True if losses else None,
             "reason": (f"{len(losses)} golden-set slice(s) lose at most {max_drop:g} of {metric} beyond noise"
                        f"{detail}") if losses else "no golden-set slice has enough rows"}]


def residual_shifts(task: str, champion: Answers, candidate: Answers, score_bins: int) -> np.ndarray:
    """Each row's score shift minus the mean shift of rows in its bin of champion score."""
    change = score_shift(task, champion, candidate)
    edges = np.unique(np.quantile(champion.score, np.linspace(0, 1, score_bins + 1)))
    index = np.searchsorted(edges[1:-1], champion.score, side="right")
    expected = np.bincount(index, weights=change) / np.maximum(np.bincount(index), 1)
    return change - expected[index]


def answer_changes(task: str, frame: pd.DataFrame, champion: Answers, candidate: Answers,
                   groups: list[tuple[str, str, np.ndarray]], min_rows: int, score_bins: int) -> dict:
    """Where answers changed: overall counts and, per group with ``min_rows`` rows, the residual shift."""
    change = signed_change(task, champion, candidate)
    residual = residual_shifts(task, champion, candidate, score_bins)
    rows = []
    for column, value, mask in groups:
        n = int(mask.sum())
        if n < min_rows:
            continue
        r = residual[mask]
        rows.append({"column": column, "value": value, "rows": n, "changed": int(np.sum(change[mask] != 0)),
                     "up": int(np.sum(change[mask] > 0)), "down": int(np.sum(change[mask] < 0)),
                     "shift": round(float(r.mean()), 6), "z": round(_z(r), 3)})
    return {"rows": int(len(change)), "changed": int(np.sum(change != 0)), "up": int(np.sum(change > 0)),
            "down": int(np.sum(change < 0)), "groups": rows}


def examples(frame: pd.DataFrame, mask: np.ndarray, champion: Answers, candidate: Answers,
             columns: list[str], limit: int = MAX_EXAMPLES, task: str = "binary") -> list[dict]:
    """Up to ``limit`` rows of a group whose answer changed, with both models' scores and answers.

    Answers are as :class:`Answers` holds them (binary 0/1, multiclass the class index, regression the value).
    """
    changed = np.flatnonzero(mask & (signed_change(task, champion, candidate) != 0))[:limit]
    out = []
    for i in changed:
        row = {c: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
               for c, v in frame.iloc[int(i)][columns].items()}
        out.append({"row": row, "champion_score": round(float(champion.score[i]), 6),
                    "candidate_score": round(float(candidate.score[i]), 6),
                    "champion_answer": champion.decision[i].item(), "candidate_answer": candidate.decision[i].item()})
    return out


def change_checks(report: dict, where: str, max_shift: float, min_z: float) -> list[dict]:
    """Gate checks: one per group whose scores moved together, else one passing check."""
    key = "gate.answer_changes.max_shift"
    flagged = [g for g in report["groups"] if abs(g["shift"]) >= max_shift and abs(g["z"]) >= min_z]
    threshold = {"max_shift": max_shift, "min_z": min_z}
    if flagged:
        return [{"kind": "answer_change", "metric": "shift", "key": key, "group": f"{g['column']}={g['value']}",
                 "data": where, "threshold": threshold, "observed": g["shift"], "skipped": False, "passed": False,
                 "reason": f"answers moved together in {g['column']}={g['value']} on the {where}: scores "
                           f"{g['shift']:+.4f} beyond rows the champion scored alike (limit {max_shift:g}, "
                           f"z {g['z']:+.2f}); {g['down']} answers down, {g['up']} up of {g['rows']} rows"}
                for g in flagged]
    worst = max(report["groups"], key=lambda g: abs(g["shift"]), default=None)
    detail = f"; largest {worst['shift']:+.4f} on {worst['column']}={worst['value']}" if worst else ""
    return [{"kind": "answer_change", "metric": "shift", "key": key, "group": None, "data": where,
             "threshold": threshold, "observed": worst["shift"] if worst else None,
             "skipped": not report["groups"], "passed": True if report["groups"] else None,
             "reason": f"{report['changed']} of {report['rows']} answers changed on the {where}, "
                       f"scores moved in no group beyond {max_shift:g}{detail}"}]
