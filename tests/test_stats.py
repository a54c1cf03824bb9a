"""Exact binomial statistics against SciPy and statsmodels."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

import jaxcert as jc
from jaxcert.stats._clopper_pearson import lower_bound_pair

GRID = [
    (k, n)
    for n in (1, 2, 7, 50, 1000, 100_000)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n})
    if 0 <= k <= n
] + [(0, 10**7), (1, 10**7), (5 * 10**6, 10**7), (9_999_990, 10**7), (10**7, 10**7)]
ALPHAS = (1e-10, 0.001, 0.05, 0.5)


def _beta_lower(k, n, alpha):
    if k == 0:
        return 0.0
    return scipy.stats.beta.ppf(alpha, k, n - k + 1) if k < n else alpha ** (1.0 / n)


@pytest.mark.usefixtures("x64")
def test_lower_confidence_bound_matches_scipy():
    ks, ns, alphas = map(
        np.array, zip(*[(k, n, a) for (k, n), a in itertools.product(GRID, ALPHAS)])
    )
    got = np.asarray(jc.stats.lower_confidence_bound(ks, ns, alphas))
    assert got.dtype == np.float64
    want = np.array([_beta_lower(*args) for args in zip(ks, ns, alphas)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # The complement is accurate by itself where the bound is close to one.
    _, complement = lower_bound_pair(ks, ns, alphas)
    want_complement = np.array(
        [
            scipy.stats.beta.isf(a, n - k + 1, k) if 0 < k < n else 1 - _beta_lower(k, n, a)
            for k, n, a in zip(ks, ns, alphas)
        ]
    )
    np.testing.assert_allclose(np.asarray(complement), want_complement, rtol=1e-6)


@pytest.mark.usefixtures("x64")
def test_clopper_pearson_matches_statsmodels():
    for (k, n), alpha in itertools.product(GRID, (0.002, 0.01, 0.1)):
        lower, upper = jc.stats.clopper_pearson(k, n, alpha)
        want_lower, want_upper = proportion_confint(k, n, alpha=alpha, method="beta")
        assert float(lower) == pytest.approx(want_lower, rel=1e-6, abs=1e-300)
        assert float(upper) == pytest.approx(want_upper, rel=1e-6, abs=1e-300)


@pytest.mark.usefixtures("x64")
def test_cohen_lower_bound_equals_statsmodels_at_twice_alpha():
    k, n, alpha = 99_950, 100_000, 0.001
    want = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert float(jc.stats.lower_confidence_bound(k, n, alpha)) == pytest.approx(want, rel=1e-9)


@pytest.mark.usefixtures("x64")
def test_upper_confidence_bound_matches_scipy():
    for k, n in GRID:
        want = 1.0 if k == n else scipy.stats.beta.isf(0.001, k + 1, n - k)
        got = float(jc.stats.upper_confidence_bound(k, n, 0.001))
        assert got == pytest.approx(want, rel=1e-6), (k, n)


def test_edge_cases_closed_form():
    assert float(jc.stats.lower_confidence_bound(0, 20, 0.01)) == 0.0
    assert float(jc.stats.upper_confidence_bound(20, 20, 0.01)) == 1.0
    np.testing.assert_allclose(
        jc.stats.lower_confidence_bound(20, 20, 0.01), 0.01 ** (1 / 20), rtol=1e-6
    )
    np.testing.assert_allclose(jc.stats.lower_confidence_bound(1, 1, 0.05), 0.05, rtol=1e-6)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("n", [1, 10, 57, 200])
@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_exact_coverage(n, alpha):
    """For every true p, the probability that the lower bound exceeds p is at most alpha."""
    ks = np.arange(n + 1)
    lower = np.asarray(jc.stats.lower_confidence_bound(ks, n, alpha))
    upper = np.asarray(jc.stats.upper_confidence_bound(ks, n, alpha))
    # The miss probability is largest just below a bound, so test there and on a grid.
    ps = np.unique(
        np.concatenate([np.linspace(1e-4, 1 - 1e-4, 301), lower[1:] - 1e-12, upper[:-1] + 1e-12])
    )
    ps = ps[(ps > 0) & (ps < 1)]
    pmf = scipy.stats.binom.pmf(ks[None, :], n, ps[:, None])
    miss_low = np.sum(pmf * (lower[None, :] > ps[:, None]), axis=1)
    miss_high = np.sum(pmf * (upper[None, :] < ps[:, None]), axis=1)
    assert miss_low.max() <= alpha * (1 + 1e-9)
    assert miss_high.max() <= alpha * (1 + 1e-9)
    # Exactness: the bound is not conservative by much either (the sup approaches alpha).
    assert miss_low.max() >= 0.5 * alpha or n < 10


@pytest.mark.usefixtures("x64")
def test_binom_pvalue_matches_scipy():
    cases = [
        (k, n, p)
        for n in (1, 2, 9, 10, 100, 1001)
        for p in (0.5, 0.3, 0.01, 0.9)
        for k in sorted({0, 1, n // 4, n // 2, n - 1, n})
        if 0 <= k <= n
    ]
    cases += [(4_999_000, 10**7, 0.5), (5_010_000, 10**7, 0.5), (123, 1000, 0.01)]
    k, n, p = map(np.array, zip(*cases))
    got = np.asarray(jc.stats.binom_pvalue(k, n, p))
    want = np.array([scipy.stats.binomtest(int(a), int(b), float(c)).pvalue for a, b, c in cases])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-300)


def test_float32_radius_is_accurate_through_the_complement():
    """In float32, Phi^{-1} of pA_lower from its complement keeps the radius accurate."""
    n = 100_000
    ks = np.array([60_000, 90_000, 99_000, 99_900, 99_990, 99_999, 100_000])
    _, complement = lower_bound_pair(ks, n, 0.001)
    assert complement.dtype == jnp.float32
    radius = -scipy.stats.norm.ppf(np.asarray(complement, np.float64))
    want = scipy.stats.norm.ppf([_beta_lower(k, n, 0.001) for k in ks])
    np.testing.assert_allclose(radius, want, rtol=2e-5)


def test_jit_and_batch():
    f = jax.jit(jc.stats.lower_confidence_bound)
    k = jnp.array([[5, 6], [7, 8]])
    got = f(k, 10, 0.01)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, jc.stats.lower_confidence_bound(k, 10, 0.01), rtol=1e-6)
    assert jax.jit(jc.stats.binom_pvalue)(3, 10, 0.5).shape == ()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jc.stats.lower_confidence_bound(3, 10, 0.0), "alpha"),
        (lambda: jc.stats.lower_confidence_bound(3, 10, 1.5), "alpha"),
        (lambda: jc.stats.lower_confidence_bound(11, 10, 0.1), "k"),
        (lambda: jc.stats.lower_confidence_bound(-1, 10, 0.1), "k"),
        (lambda: jc.stats.clopper_pearson(0, 0, 0.1), "n"),
        (lambda: jc.stats.clopper_pearson(1.5, 3, 0.1), "k"),
        (lambda: jc.stats.binom_pvalue(3, 10, 1.0), "p"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("n", [1000, 5000])
def test_exact_coverage_large_n(n):
    ks = np.arange(n + 1)
    lower = np.asarray(jc.stats.lower_confidence_bound(ks, n, 0.001))
    ps = np.unique(np.concatenate([np.linspace(1e-4, 1 - 1e-4, 2001), lower[1:] - 1e-12]))
    pmf = scipy.stats.binom.pmf(ks[None, :], n, ps[:, None])
    assert np.sum(pmf * (lower[None, :] > ps[:, None]), axis=1).max() <= 0.001 * (1 + 1e-9)
