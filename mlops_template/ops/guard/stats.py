"""The few statistical tests the guard's joint checks use, vectorised over many groups.

Every joint check is a family of tests (one per group, value or outcome) held to one
false-alarm budget ``alpha``: a test fails when its p-value is below ``alpha / tests``
(Bonferroni), so a batch drawn from the accepted data's distribution fails a family with
probability at most ``alpha`` however many groups it tests, and small groups, whose shares are
noisy, need a large difference before they count. The p-values are exact binomial tails where
counts are small, and the normal approximation of the two-proportion z-test where both sides
hold at least ``min_group_rows`` rows.
"""

from __future__ import annotations

import math

import numpy as np

TINY = 1e-300  # p-values are floored here so that -log10 stays finite in reports


def binomial_upper_tail(successes: np.ndarray | int, trials: np.ndarray | int, p: np.ndarray | float) -> np.ndarray:
    """P(X >= successes) for X ~ Binomial(trials, p): how surprising a count this high is."""
    from scipy.special import bdtrc  # scipy.stats costs 2 s to import; this is the same tail

    k = np.asarray(successes, dtype=float)
    return np.maximum(np.where(k <= 0, 1.0, bdtrc(np.maximum(k - 1, 0), trials, p)), TINY)


def two_proportion_p(pos_a: np.ndarray, n_a: np.ndarray, pos_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Two-sided p-value of the pooled two-proportion z-test, one per pair of groups.

    A pair whose pooled share is 0 or 1 (no variation at all) gets p = 1.
    """
    pos_a, n_a, pos_b, n_b = (np.asarray(v, dtype=float) for v in (pos_a, n_a, pos_b, n_b))
    pooled = (pos_a + pos_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (pos_a / n_a - pos_b / n_b) / se, 0.0)
    return np.maximum(np.vectorize(math.erfc)(np.abs(z) / math.sqrt(2)), TINY) if z.size else z


def weighted_bernoulli_upper_p(members, p: np.ndarray, weights: np.ndarray, observed: np.ndarray,
                               inflate: np.ndarray, iterations: int = 60) -> np.ndarray:
    """One-sided p-value P(S >= observed) per group, S = sum of ``weights * y`` over the group's rows.

    ``members`` is a sparse 0/1 matrix (rows x groups); each row's ``y`` is a Bernoulli with
    probability ``p``; ``weights`` (any sign, one per row) weigh the rows. Such sums are skewed
    (rare outcomes, rows whose label is nearly certain), and a normal tail would call a few extra
    rows there a one-in-a-million event: this is the saddle-point approximation of Lugannani and
    Rice, which is accurate in the far tail and equals the normal test where the sum is symmetric,
    with a continuity correction of half the group's mean weight (exact for counts). ``inflate``
    (per group, at least 1) widens the variance for what ``p`` does not carry (its own estimation
    error): the signed root ``w`` and ``u`` are divided by its square root, as a normal test's z
    would be. Groups whose sum is not above its mean get 1.
    """
    from scipy.special import expit, ndtr

    coo = members.tocoo()
    rows, groups, size = coo.row, coo.col, members.shape[1]
    q0 = np.clip(np.asarray(p, dtype=float)[rows], 1e-12, 1 - 1e-12)
    c = np.asarray(weights, dtype=float)[rows]
    logit = np.log(q0) - np.log1p(-q0)
    count = np.maximum(np.bincount(groups, minlength=size), 1)
    mean = np.bincount(groups, c * q0, minlength=size)
    target = np.asarray(observed, dtype=float) - 0.5 * np.bincount(groups, np.abs(c), minlength=size) / count
    flat = target <= mean  # not above the mean, even before the continuity correction counts
    t = np.zeros(size)
    for _ in range(iterations):  # Newton on K'(t) = target; K' is increasing, steps are clipped
        q = expit(logit + t[groups] * c)
        k1 = np.bincount(groups, c * q, minlength=size)
        k2 = np.bincount(groups, c * c * q * (1 - q), minlength=size)
        step = np.where(flat, 0.0, np.clip((target - k1) / np.maximum(k2, 1e-12), -2.0, 2.0))
        t = t + step
        if np.all(np.abs(step) < 1e-9):
            break
    q = expit(logit + t[groups] * c)
    k2 = np.bincount(groups, c * c * q * (1 - q), minlength=size)
    cumulant = np.bincount(groups, np.logaddexp(np.log1p(-q0), np.log(q0) + t[groups] * c), minlength=size)
    scale = np.sqrt(np.maximum(np.asarray(inflate, dtype=float), 1.0))
    w = np.sqrt(np.maximum(2 * (t * target - cumulant), 0.0)) / scale
    u = t * np.sqrt(k2) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = ndtr(-w) + np.exp(-w * w / 2) / math.sqrt(2 * math.pi) * (1 / u - 1 / w)
    unusable = flat | (w < 1e-3) | ~np.isfinite(tail)  # at the mean the formula is 0/0
    return np.where(unusable, 1.0, np.clip(tail, TINY, 1.0))


def evidence(p_value: float) -> float:
    """-log10 of a p-value: the scale on which a check's value is compared with its limit."""
    return float(-math.log10(max(p_value, TINY)))
