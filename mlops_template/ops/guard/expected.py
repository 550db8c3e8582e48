"""Labels against what the inputs predict: the boiling-frog check, ``cumulative_label_given_inputs``.

A boiling frog is many batches, each relabelling a few rows of one group (Adult: a quarter of the
women earning >50K set to <=50K, 1,900 rows a step), every step under every single-batch limit.
Pooling everything accepted since the reference window and comparing each group's raw label share
with the window's (``cumulative_label_by_group``) adds the steps up, but a group's raw share also
varies with who happens to be in it (how many of the women are married, educated, working long
hours): after five such steps on Adult that test stopped the frog in half the seeds.

This check asks a sharper question of the same pooled rows. A logistic model fitted on the window,
whose only inputs are one indicator per group (each categorical value and numeric bin the
label-share checks test), gives each pooled row the probability ``p`` of each outcome its inputs
predict; the fit makes each group's labels sum to its predictions on the window. Per group and
outcome, two one-sided statistics, one per direction a label can be moved:

- ``lost``: ``sum a (p - y)``, ``a = min(1 / (1 - p), MAX_WEIGHT)``: rows of the outcome relabelled
  to another;
- ``gained``: ``sum b (y - p)``, ``b = min(1 / p, MAX_WEIGHT)``: rows relabelled to the outcome.

Each is the locally most powerful test against "a share of the group's rows of that outcome was
relabelled" (the derivative of the likelihood in that share): a row whose inputs predict the
outcome weighs more when it shows another label. Weights are capped so that the model's extreme
probabilities, its least reliable, cannot dominate. Both are zero on average for rows drawn as the
window was, and many small steps in one direction add up (steps in opposite directions cancel).
Their p-values treat the labels as Bernoullis with probabilities ``p``
(:func:`~mlops_template.ops.guard.stats.weighted_bernoulli_upper_p`, a saddle-point tail that stays
accurate where the sum is skewed), with the variance widened by the window model's own error (the
delta method with its coefficients' covariance; for one group alone this is the two-sample
``1 + rows / window rows``) and by the window's squared residuals over ``p(1 - p)`` where the
model fits a group worse than its probabilities claim.

A group fails when a direction's p-value is below ``alpha / (groups x outcomes x 2)`` and its
weighted shift (the statistic over the sum of its weights) is at least ``min_group_label_shift``;
groups need ``min_group_rows`` rows on both sides. On Adult's five-step frog the women's ``lost``
statistic stands at z of 7 to 9 where the raw share stood at 4 to 6. The report lists the groups
that moved most, with their observed and predicted shares, the excess rows and the direction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.ops.guard.joint import TOP, JointSettings, group_codes, input_columns
from mlops_template.ops.guard.report import Check
from mlops_template.ops.guard.stats import evidence, weighted_bernoulli_upper_p
from mlops_template.ops.guard.target import TargetView

FIT_C = 10.0  # inverse L2 strength of the window's model: light, so its group sums stay near zero


def group_design(window: pd.DataFrame, current: pd.DataFrame, contract: Contract, bins: int):
    """One 0/1 indicator per group (``col=value``, ``col in [a, b)``) for the window's and current rows.

    Returns two sparse matrices (window, current) with the same columns, and the groups' names.
    """
    from scipy import sparse

    numeric = set(contract.columns_with_role("numeric"))
    win_blocks, cur_blocks, names = [], [], []
    for column in input_columns(contract):
        win, cur, groups = group_codes(window[column], current[column], column in numeric, bins)
        for codes, blocks in ((win, win_blocks), (cur, cur_blocks)):
            blocks.append(sparse.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)),
                                            shape=(len(codes), len(groups))))
        names += groups
    if not names:
        return None, None, []
    return sparse.hstack(win_blocks).tocsr(), sparse.hstack(cur_blocks).tocsr(), names


def _expected(x_win, y_win: np.ndarray, x_cur) -> tuple[np.ndarray, np.ndarray]:
    """The window model's probabilities for the window's rows and the current rows."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=FIT_C, max_iter=1000).fit(x_win, y_win)
    return model.predict_proba(x_win)[:, 1], model.predict_proba(x_cur)[:, 1]


MAX_WEIGHT = 4.0  # cap of a row's weight: rows predicted above 0.75 count as if predicted at 0.75


def _with_intercept(x):
    from scipy import sparse

    return sparse.hstack([sparse.csr_matrix(np.ones((x.shape[0], 1))), x]).tocsr()


def _coefficient_covariance(x_win, p_win: np.ndarray) -> np.ndarray:
    """The window model's coefficients' covariance: the inverse of its penalised Fisher information."""
    design = _with_intercept(x_win)
    information = (design.T @ design.multiply((p_win * (1 - p_win))[:, None]).tocsr()).toarray()
    information[np.arange(1, len(information)), np.arange(1, len(information))] += 1 / FIT_C  # the L2 penalty
    return np.linalg.pinv(information)


def _estimation_variance(x_cur, gradient: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Per group, the variance a statistic ``sum c (y - p)`` gets from the window model's own error.

    A coefficient error ``e`` moves the group's sum by ``-sum c p (1 - p) x'e`` (``gradient`` is
    ``c p (1 - p)`` per row): the delta method's ``d' C d`` with ``d`` that sum's gradient per group.
    """
    d = (x_cur.T @ _with_intercept(x_cur).multiply(gradient[:, None]).tocsr()).toarray()
    return np.einsum("gi,ij,gj->g", d, covariance, d)


def _group_table(x_win, y_win: np.ndarray, x_cur, y_cur: np.ndarray, names: list[str], outcome: str,
                 min_rows: int) -> pd.DataFrame:
    """Per group with ``min_rows`` rows on both sides and direction: shares, excess, shift, z, p."""
    p_win, p_cur = _expected(x_win, y_win, x_cur)
    rows_win, rows_cur = np.asarray(x_win.sum(0)).ravel(), np.asarray(x_cur.sum(0)).ravel()
    binomial = p_cur * (1 - p_cur)
    window_info = x_win.T @ (p_win * (1 - p_win))
    # The model may fit a group worse than its probabilities claim: widen by the window's own
    # squared residuals over p(1 - p) there (never narrow: the fit saw those rows).
    misfit = np.maximum(1.0, (x_win.T @ (y_win - p_win) ** 2) / np.maximum(window_info, 1e-12))
    covariance = _coefficient_covariance(x_win, p_win)
    observed = x_cur.T @ y_cur
    excess = observed - x_cur.T @ p_cur
    keep = (rows_win >= min_rows) & (rows_cur >= min_rows)
    tables = []
    for direction, weight, sign in (("lost", np.minimum(1 / np.maximum(1 - p_cur, 1e-12), MAX_WEIGHT), -1.0),
                                    ("gained", np.minimum(1 / np.maximum(p_cur, 1e-12), MAX_WEIGHT), 1.0)):
        c = sign * weight  # the statistic is sum c (y - p): its upper tail is the direction's
        spread = x_cur.T @ (c * c * binomial)
        inflate = misfit + _estimation_variance(x_cur, c * binomial, covariance) / np.maximum(spread, 1e-12)
        statistic = x_cur.T @ (c * (y_cur - p_cur))
        used = keep & (spread > 0)
        z = np.where(used, statistic / np.sqrt(np.where(used, spread * inflate, 1.0)), 0.0)
        p = weighted_bernoulli_upper_p(x_cur, p_cur, c, x_cur.T @ (c * y_cur), inflate)
        tables.append(pd.DataFrame({
            "outcome": outcome, "direction": direction, "rows": rows_cur, "reference_rows": rows_win,
            "share": observed / np.maximum(rows_cur, 1),
            "expected_share": (observed - excess) / np.maximum(rows_cur, 1),
            "excess": excess, "shift": statistic / np.maximum(x_cur.T @ weight, 1e-12), "z": z, "p": p},
            index=np.asarray(names, dtype=object))[used])
    return pd.concat(tables)


def label_given_inputs(name: str, current: pd.DataFrame, window: pd.DataFrame, contract: Contract,
                       view: TargetView, s: JointSettings) -> Check:
    """Each group's labels in ``current`` against what a model of ``window`` expects (module doc)."""
    x_win, x_cur, names = group_design(window, current, contract, s.numeric_group_bins)
    ys_win, ys_cur = view.indicators(window[view.column]), view.indicators(current[view.column])
    tables = []
    for outcome in view.shifted if names else ():
        y_win, y_cur = ys_win[outcome], ys_cur[outcome]
        if len(np.unique(y_win)) < 2:  # one class only in the window: nothing to model
            continue
        tables.append(_group_table(x_win, y_win, x_cur, y_cur, names, outcome, s.min_group_rows))
    table = pd.concat(tables) if tables else pd.DataFrame()
    if table.empty:
        return Check(name, None, 0.0, True, f"no group has {s.min_group_rows} rows on both sides: not tested")
    table = table.sort_values("p", kind="stable")
    limit = s.alpha / len(table)
    large = table[table["shift"] >= s.min_group_label_shift]
    failing = large[large["p"] < limit]
    value = evidence(large["p"].iloc[0]) if len(large) else 0.0

    def describe(group: str, r: pd.Series) -> str:
        return (f"{view.column}={r['outcome']} share among {group}: {r['share']:.3f} where the inputs predict "
                f"{r['expected_share']:.3f} ({r['excess']:+.0f} rows over {int(r['rows'])}; {r['outcome']} "
                f"{r['direction']}: weighted shift {r['shift']:.3f}, z={r['z']:.1f}, p={r['p']:.2g})")

    top = [{"group": g, "outcome": r["outcome"], "direction": r["direction"], "rows": int(r["rows"]),
            "reference_rows": int(r["reference_rows"]), "share": round(r["share"], 4),
            "expected_share": round(r["expected_share"], 4), "excess_rows": round(r["excess"], 1),
            "shift": round(r["shift"], 4), "z": round(r["z"], 2), "p_value": float(f"{r['p']:.3g}")}
           for g, r in table.head(TOP).iterrows()]
    details = {"tests": len(table), "alpha": s.alpha, "p_limit": float(f"{limit:.3g}"),
               "min_shift": s.min_group_label_shift, "failed_groups": len(failing), "top": top,
               "summary": describe(*next(table.iterrows()))}
    threshold = evidence(limit)
    if len(failing):
        return Check(name, round(value, 3), round(threshold, 3), False,
                     f"{len(failing)} group(s) moved beyond what their inputs predict: "
                     f"{describe(*next(failing.iterrows()))}, below p {limit:.2g} (alpha {s.alpha} over "
                     f"{len(table)} tests: groups x directions) and by at least {s.min_group_label_shift}", details)
    return Check(name, round(value, 3), round(threshold, 3), True,
                 f"no group's labels moved significantly beyond what their inputs predict ({len(table)} tests; "
                 f"largest: {describe(*next(table.iterrows()))})", details)
