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


def evidence(p_value: float) -> float:
    """-log10 of a p-value: the scale on which a check's value is compared with its limit."""
    return float(-math.log10(max(p_value, TINY)))
