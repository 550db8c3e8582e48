"""The guard's tail of a weighted sum of Bernoullis against the exact distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

from mlops_template.ops.guard.stats import weighted_bernoulli_upper_p


def exact_upper(p: np.ndarray, weights: np.ndarray, observed: int) -> float:
    """P(sum weights * y >= observed) for integer weights, by convolving the rows one at a time."""
    low = int(weights[weights < 0].sum())
    dist = np.zeros(int(np.abs(weights).sum()) + 1)
    dist[-low] = 1.0
    for q, w in zip(p, weights.astype(int), strict=True):
        moved = np.roll(dist, w) * q
        dist = dist * (1 - q) + moved
    return float(dist[observed - low:].sum())


def one_group(n: int) -> sparse.csr_matrix:
    return sparse.csr_matrix(np.ones((n, 1)))


@pytest.mark.parametrize(("a", "b", "n", "sign", "z"), [
    (30, 1, 126, -1, 4),   # nearly certain positives, some lost: the skewed case
    (1, 10, 3000, -1, 4),  # rare positives lost (Adult's women)
    (1, 10, 3000, 1, 4),   # rare positives gained: the heavy tail
    (1, 30, 400, 1, 3),    # very rare, gained
    (1, 1, 1000, 1, 5),    # symmetric
])
def test_the_saddle_point_tail_is_close_to_the_exact_one_and_never_below_it(a, b, n, sign, z):
    p = np.random.default_rng(0).beta(a, b, n)
    weights = sign * np.where(np.random.default_rng(1).random(n) < 0.5, 1, 2)  # integer weights, two values
    mean, sd = float((weights * p).sum()), float(np.sqrt((weights ** 2 * p * (1 - p)).sum()))
    observed = math.ceil(mean + z * sd)
    exact = exact_upper(p, weights, observed)
    saddle = weighted_bernoulli_upper_p(one_group(n), p, weights, np.array([observed]), np.ones(1))[0]
    assert exact <= saddle <= 3 * exact, (exact, saddle)


def test_a_sum_not_above_its_mean_gets_one_and_inflation_acts_as_a_wider_normal():
    n = 4000
    p = np.full(n, 0.5)
    members, weights = one_group(n), np.ones(n)
    assert weighted_bernoulli_upper_p(members, p, weights, np.array([n / 2 - 30]), np.ones(1))[0] == 1.0
    observed = np.array([n / 2 + 4 * math.sqrt(n / 4)])
    plain = weighted_bernoulli_upper_p(members, p, weights, observed, np.ones(1))[0]
    wider = weighted_bernoulli_upper_p(members, p, weights, observed, np.full(1, 4.0))[0]
    assert plain == pytest.approx(0.5 * math.erfc(4 / math.sqrt(2)), rel=0.2)  # z = 4
    assert wider == pytest.approx(0.5 * math.erfc(2 / math.sqrt(2)), rel=0.2)  # z / sqrt(4) = 2
