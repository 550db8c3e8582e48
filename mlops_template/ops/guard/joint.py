"""The guard's joint checks: label shares per group, triggers, label flips, near-duplicates.

Marginal checks (one column at a time, the overall label share) miss poison aimed at a group:
relabelling every positive woman moves the overall share by 3 points and no column at all.
These checks look at the label together with the inputs, for any contract:

- ``label_by_group``: the share of each outcome (binary: the positive class) among the rows of
  each group, a categorical value or a numeric bin (a value holding a tenth of the data, else
  quantile bins of the rest), with at least ``min_group_rows`` rows on both sides, compared by a
  two-proportion z-test. A group fails when its p-value is below ``alpha / groups tested`` and
  its share moved at least ``min_group_label_shift``.
- ``trigger``: a value rare in the accepted data (share below ``trigger_rare_share``) that
  a batch holds at least ``min_trigger_rows`` times, significantly more often than its accepted
  share predicts, with a nearly constant label (one class in ``trigger_label_purity`` of those
  rows, or of the surplus over the rows the accepted share predicts, so that the value's natural
  rows in the batch cannot dilute the poisoned ones under the limit) that its accepted rows
  (shrunk towards the overall share) do not predict: the backdoor pattern, a rare value that
  buys an answer. Both tests must pass ``alpha / values tested``.
- ``label_flips``: rows equal to an accepted row (or another row of the batch) in every column
  the model uses but with another label; ``near_duplicates``: rows equal to one in every column
  the model uses but not in every column (they differ in the label or in columns the model
  ignores, such as a survey weight or a record number), exact duplicates excluded (their own
  check). Coarse data has such twins naturally: the expected share is measured on pseudo-batches
  of accepted rows (:func:`twin_share`), and the batch fails when its share exceeds it by
  ``max_label_flip_excess`` (``max_near_duplicate_excess``) with a p-value below ``alpha``
  (a t prediction test against the pseudo-batches' spread: twins cluster, so counts are not
  binomial).

The same ``label_by_group`` and ``trigger`` checks run on everything accepted since the
reference window plus the batch, against the window (``cumulative_*``), beside
``cumulative_label_given_inputs`` (:mod:`.expected`), which weighs those labels against what the
inputs predict.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.ops.guard.marginal import MISSING, psi_bins
from mlops_template.ops.guard.report import Check
from mlops_template.ops.guard.stats import TINY, binomial_upper_tail, evidence, two_proportion_p
from mlops_template.ops.guard.target import TargetView

REPEATS = 20      # pseudo-batches drawn from the accepted data to measure the expected twin share
SHRINK_ROWS = 20  # pseudo-rows pulling a rare value's accepted label share towards the overall one
TOP = 5           # groups listed in a check's details


@dataclass(frozen=True)
class JointSettings:
    """The joint checks' thresholds (``ingest:`` in params.yaml); defaults keep false alarms rare."""

    alpha: float = 0.001
    min_group_rows: int = 50
    min_group_label_shift: float = 0.02
    numeric_group_bins: int = 5
    trigger_rare_share: float = 0.01
    min_trigger_rows: int = 20
    trigger_label_purity: float = 0.95
    max_label_flip_excess: float = 0.02
    max_near_duplicate_excess: float = 0.05
    seed: int | None = None  # of the twin checks' random subsets; None draws one (the report records it)

    @classmethod
    def from_thresholds(cls, thresholds: dict[str, Any]) -> JointSettings:
        """The settings named in ``thresholds``, defaults for the rest."""
        known = cls.__dataclass_fields__
        return cls(**{k: v if k == "seed" else type(getattr(cls, k))(v)
                      for k, v in thresholds.items() if k in known})


def input_columns(contract: Contract) -> list[str]:
    """Columns groups are drawn from: numeric and categorical inputs (not ignored ones)."""
    return [c.name for c in contract.columns if c.role in ("numeric", "categorical")]


def _factorize(reference: pd.Series, current: pd.Series, numeric: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Integer codes of each distinct value over both frames (missing is a value), and the values."""
    if numeric:
        both = pd.to_numeric(pd.concat([reference, current], ignore_index=True), errors="coerce").astype("float64")
    else:
        both = pd.concat([reference, current], ignore_index=True).astype(object)
    codes, uniques = pd.factorize(both, use_na_sentinel=True)
    names = [f"{v:g}" if numeric else str(v) for v in uniques] + [MISSING]
    codes = np.where(codes < 0, len(names) - 1, codes)
    return codes[:len(reference)], codes[len(reference):], names


def group_codes(reference: pd.Series, current: pd.Series, numeric: bool, bins: int
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each row's group in one column as codes, and the groups' names (``col=value``, ``col in [a, b)``).

    A numeric column is grouped by the bins of :func:`psi_bins` drawn from ``reference``.
    """
    name = reference.name
    if not numeric:
        ref_codes, cur_codes, values = _factorize(reference, current, False)
        return ref_codes, cur_codes, [f"{name}={v}" for v in values]
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float)
    known = ref[~np.isnan(ref)]
    points, edges = psi_bins(known, bins) if known.size else (np.empty(0), np.empty(0))
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    names = [f"{name}={p:g}" for p in points] + [
        f"{name} in [{bounds[i]:g}, {bounds[i + 1]:g})" for i in range(len(bounds) - 1)] + [f"{name}={MISSING}"]

    def codes(s: pd.Series) -> np.ndarray:
        values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
        at_point = np.isin(values, points)
        out = np.where(at_point, np.searchsorted(points, values),
                       len(points) + np.searchsorted(edges, values, side="right"))
        return np.where(np.isnan(values), len(names) - 1, out)
    return codes(reference), codes(current), names


def _counts(codes: np.ndarray, outcome: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(codes, weights=outcome, minlength=size), np.bincount(codes, minlength=size)


def label_by_group(name: str, current: pd.DataFrame, reference: pd.DataFrame, contract: Contract,
                   view: TargetView, s: JointSettings) -> Check:
    """Each outcome's share per group of ``current`` against ``reference`` (see the module doc)."""
    ref_y, cur_y = view.indicators(reference[view.column]), view.indicators(current[view.column])
    numeric = set(contract.columns_with_role("numeric"))
    tables = []
    for column in input_columns(contract):
        ref_g, cur_g, names = group_codes(reference[column], current[column], column in numeric, s.numeric_group_bins)
        for outcome in view.shifted:
            sum_ref, count_ref = _counts(ref_g, ref_y[outcome], len(names))
            sum_cur, count_cur = _counts(cur_g, cur_y[outcome], len(names))
            keep = (count_ref >= s.min_group_rows) & (count_cur >= s.min_group_rows)
            tables.append(pd.DataFrame({"sum_ref": sum_ref[keep], "count_ref": count_ref[keep],
                                        "sum_cur": sum_cur[keep], "count_cur": count_cur[keep], "outcome": outcome},
                                       index=np.asarray(names, dtype=object)[keep]))
    table = pd.concat(tables) if tables else pd.DataFrame()
    if table.empty:
        return Check(name, None, 0.0, True, f"no group has {s.min_group_rows} rows on both sides: not tested")
    table["p"] = two_proportion_p(table["sum_cur"], table["count_cur"], table["sum_ref"], table["count_ref"])
    table["share_cur"] = table["sum_cur"] / table["count_cur"]
    table["share_ref"] = table["sum_ref"] / table["count_ref"]
    table["shift"] = table["share_cur"] - table["share_ref"]
    limit = s.alpha / len(table)
    large = table[table["shift"].abs() >= s.min_group_label_shift].sort_values("p")
    failing = large[large["p"] < limit]
    value = evidence(large["p"].iloc[0]) if len(large) else 0.0

    def describe(group: str, row: pd.Series) -> str:
        return (f"{view.column}={row['outcome']} share among {group}: {row['share_ref']:.3f} accepted -> "
                f"{row['share_cur']:.3f} ({int(row['count_ref'])} vs {int(row['count_cur'])} rows, p={row['p']:.2g})")

    top = [{"group": g, "outcome": r["outcome"], "rows": int(r["count_cur"]), "reference_rows": int(r["count_ref"]),
            "share": round(r["share_cur"], 4), "reference_share": round(r["share_ref"], 4),
            "shift": round(r["shift"], 4), "p_value": float(f"{r['p']:.3g}")} for g, r in large.head(TOP).iterrows()]
    details = {"groups_tested": len(table), "alpha": s.alpha, "p_limit": float(f"{limit:.3g}"),
               "min_shift": s.min_group_label_shift, "failed_groups": len(failing), "top": top,
               "summary": describe(*next(large.iterrows())) if len(large) else ""}
    threshold = evidence(limit)
    if len(failing):
        reason = (f"{len(failing)} group(s) moved: {describe(*next(failing.iterrows()))}, below p {limit:.2g} "
                  f"(alpha {s.alpha} over {len(table)} groups) and by at least {s.min_group_label_shift}")
        return Check(name, round(value, 3), round(threshold, 3), False, reason, details)
    return Check(name, round(value, 3), round(threshold, 3), True,
                 f"no group's label share moved significantly ({len(table)} groups tested)", details)


def trigger(name: str, current: pd.DataFrame, reference: pd.DataFrame, contract: Contract,
            view: TargetView, s: JointSettings) -> Check:
    """Rare values surging in ``current`` with a nearly constant label (see the module doc)."""
    n, total = len(current), len(reference)
    cur_y, ref_y = view.indicators(current[view.column]), view.indicators(reference[view.column])
    overall = {c: float(ref_y[c].mean()) if total else 0.0 for c in view.classes}
    numeric = set(contract.columns_with_role("numeric"))
    rows = []
    for column in input_columns(contract):
        ref_v, cur_v, values = _factorize(reference[column], current[column], column in numeric)
        counts, ref_counts = np.bincount(cur_v, minlength=len(values)), np.bincount(ref_v, minlength=len(values))
        tested = np.flatnonzero((counts >= s.min_trigger_rows)
                                & ((ref_counts < s.trigger_rare_share * total) if total else True))
        for code in tested:
            k, seen = int(counts[code]), int(ref_counts[code])
            here, there = cur_v == code, ref_v == code
            shares = {c: float(cur_y[c][here].mean()) for c in view.classes}
            label = max(shares, key=shares.get)
            expected = (ref_y[label][there].sum() + SHRINK_ROWS * overall[label]) / (seen + SHRINK_ROWS)
            rows.append({"value": f"{column}={values[code]}", "rows": k, "reference_rows": seen,
                         "label": label, "purity": surge_purity(shares[label], k, n * seen / total if total else 0.0,
                                                                float(expected), s.min_trigger_rows),
                         "expected": round(float(expected), 4),
                         "p_surge": (k, (seen + 1) / (total + 2)), "p_label": (round(shares[label] * k), k, expected)})
    if rows:
        surge = binomial_upper_tail([r["p_surge"][0] for r in rows], n, [r["p_surge"][1] for r in rows])
        labelled = binomial_upper_tail([r["p_label"][0] for r in rows], [r["p_label"][1] for r in rows],
                                       [r["p_label"][2] for r in rows])
        for r, p_surge, p_label in zip(rows, surge, labelled, strict=True):
            del r["p_surge"], r["p_label"]
            r["p_value"] = float(max(p_surge, p_label))
    if not rows:
        return Check(name, None, 0.0, True,
                     f"no rare value appears {s.min_trigger_rows} times or more: not tested")
    limit = s.alpha / len(rows)
    pure = sorted((r for r in rows if r["purity"] >= s.trigger_label_purity), key=lambda r: r["p_value"])
    failing = [r for r in pure if r["p_value"] < limit]
    value = evidence(pure[0]["p_value"]) if pure else 0.0
    for r in rows:
        r["p_value"] = float(f"{r['p_value']:.3g}")

    def describe(r: dict) -> str:
        return (f"{r['value']}: {r['rows']} rows (accepted data has {r['reference_rows']}), "
                f"{r['purity']:.0%} labelled {r['label']} where {r['expected']:.0%} is expected, p={r['p_value']:.2g}")

    details = {"values_tested": len(rows), "alpha": s.alpha, "p_limit": float(f"{limit:.3g}"),
               "top": pure[:TOP], "summary": describe(pure[0]) if pure else ""}
    threshold = round(evidence(limit), 3)
    if failing:
        return Check(name, round(value, 3), threshold, False,
                     f"{len(failing)} rare value(s) surged with a nearly constant label: {describe(failing[0])}, "
                     f"below p {limit:.2g} (alpha {s.alpha} over {len(rows)} values)", details)
    return Check(name, round(value, 3), threshold, True,
                 f"no rare value surged with a constant label ({len(rows)} values tested)", details)


def surge_purity(share: float, rows: int, natural: float, expected: float, min_rows: int) -> float:
    """The label's share among a value's rows, or among the surplus over its ``natural`` count.

    A batch holding a rare value's ``natural`` rows (its accepted share times the batch size,
    labelled at the accepted rate ``expected``) plus poisoned rows with one label shows the mix's
    purity, which a few natural rows push under the limit; the surplus, at least ``min_rows`` of
    them, shows the poisoned rows' own. The larger of the two, rounded to 4 places.
    """
    surplus = rows - natural
    if surplus < min_rows:
        return round(share, 4)
    return round(max(share, min(1.0, (share * rows - natural * expected) / surplus)), 4)


def _twins(keys: np.ndarray, full: np.ndarray, rows: int) -> int:
    """How many of the last ``rows`` rows have a twin (same ``keys``, other ``full``) and no exact copy."""
    def counts(values: np.ndarray) -> np.ndarray:
        _, inverse, count = np.unique(values, return_inverse=True, return_counts=True)
        return count[inverse]
    key_count, full_count = counts(keys)[-rows:], counts(full)[-rows:]
    return int(((key_count > full_count) & (full_count == 1)).sum())


@dataclass(frozen=True)
class Twins:
    """Twins found in a batch, and the twin share clean pseudo-batches of accepted rows have."""

    count: int
    rows: int
    expected: float    # mean share over the pseudo-batches
    spread: float      # their standard deviation (at least the binomial one)
    repeats: int
    seed: int

    def p_value(self) -> float:
        """How surprising the batch's share is for one more clean batch (a t prediction test).

        Twins cluster (a pair of twins counts twice), so the spread is measured on the
        pseudo-batches rather than assumed binomial; with ``repeats`` of them the test uses
        Student's t with ``repeats - 1`` degrees of freedom.
        """
        from scipy.special import stdtr

        if not self.rows:
            return 1.0
        z = (self.count / self.rows - self.expected) / (self.spread * math.sqrt(1 + 1 / self.repeats))
        return max(float(stdtr(self.repeats - 1, -z)), TINY)


def twin_share(reference: tuple[np.ndarray, np.ndarray], current: tuple[np.ndarray, np.ndarray],
               seed: int | None) -> Twins:
    """Twins of the current rows, and the share of twins to expect in a clean batch.

    ``reference`` and ``current`` are ``(keys, full)`` row hashes: a twin has the same key as
    another row (of either) but a different full hash, and is not an exact copy of one. Coarse
    data has twins naturally, at a rate that grows with the number of rows compared, so the
    expectation is measured at the same sizes: the batch is compared with a random subset of the
    accepted rows of size ``N - n`` (or ``N/2``), and ``REPEATS`` pseudo-batches of ``n`` accepted
    rows each with another such subset.
    """
    seed = secrets.randbits(32) if seed is None else seed
    rng = np.random.default_rng(seed)
    ref_keys, ref_full = reference
    cur_keys, cur_full = current
    total, rows = len(ref_keys), len(cur_keys)
    if total < 4 or not rows:
        return Twins(0, rows, 0.0, 1.0, REPEATS, seed)
    compared = total - rows if total >= 2 * rows else total // 2
    pseudo = min(rows, total - compared)
    pick = rng.permutation(total)[:compared]
    count = _twins(np.concatenate([ref_keys[pick], cur_keys]), np.concatenate([ref_full[pick], cur_full]), rows)
    shares = []
    for _ in range(REPEATS):
        order = rng.permutation(total)
        chosen = np.concatenate([order[pseudo:pseudo + compared], order[:pseudo]])
        shares.append(_twins(ref_keys[chosen], ref_full[chosen], pseudo) / pseudo)
    expected = float(np.mean(shares))
    floor = (expected * (1 - expected) + 1 / pseudo) / rows  # binomial, never zero
    # The batch and the accepted rows are complementary draws: a batch rich in twin-prone rows
    # leaves the accepted rows poorer in them, so the expectation errs the other way. Widen the
    # spread by the batch's weight against the rows it is compared with (measured on the
    # benchmark's clean batches: without this, coarse data raised false alarms).
    spread = max(float(np.std(shares, ddof=1)), math.sqrt(floor)) * math.sqrt(1 + rows / compared)
    return Twins(count, rows, expected, spread, REPEATS, seed)


def twin_check(name: str, what: str, twins: Twins, alpha: float, excess: float) -> Check:
    """A twin share held to its expected rate: fails when clearly and significantly above it."""
    share = twins.count / twins.rows if twins.rows else 0.0
    p = twins.p_value()
    over = share - twins.expected
    details = {"rows": twins.count, "share": round(share, 6), "expected_share": round(twins.expected, 6),
               "spread": round(twins.spread, 6), "excess": round(over, 6), "max_excess": excess,
               "p_value": float(f"{p:.3g}"), "alpha": alpha, "pseudo_batches": twins.repeats, "seed": twins.seed,
               "summary": f"{share:.2%} of rows vs {twins.expected:.2%} expected"}
    value = round(evidence(p), 3) if over >= excess else 0.0
    passed = not (p < alpha and over >= excess)
    verdict = "within" if passed else "above"
    return Check(name, value, round(evidence(alpha), 3), passed,
                 f"{twins.count} row(s) ({share:.2%}) {what}; {twins.expected:.2%} expected from the accepted "
                 f"data: {verdict} the limit (excess {over:+.2%}, at most {excess:.2%} or p >= {alpha}; p={p:.2g})",
                 details)
