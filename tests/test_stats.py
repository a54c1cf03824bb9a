"""Exact binomial statistics against SciPy and statsmodels."""

import decimal
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

import jaxcert as jc
from jaxcert.stats._clopper_pearson import lower_bound_pair
from jaxcert.stats._float64 import slack

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


def _rtol(n):
    """How far a statistic may be from SciPy's, relative, in the current x64 mode.

    With x64 on: 1e-10 plus the documented outward slack of (1024 + n) float64 eps (the
    algorithms themselves agree with SciPy to ~1e-15 on this grid). With x64 off: the float64
    value rounded outward to float32, so one float32 ulp more.
    """
    rtol = 1e-10 + np.asarray(slack(np.asarray(n, np.float64)))
    if _current_dtype() == np.float32:
        rtol = rtol + 2.0 * np.finfo(np.float32).eps
    return rtol


def _assert_close(got, want, n):
    """got within `_rtol(n)` of want, relative (absolute below the smallest normal float)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    tiny = np.finfo(_current_dtype()).tiny
    error = np.abs(got - want)
    assert np.all(error <= _rtol(n) * np.abs(want) + tiny), np.max(error / np.abs(want))


def _current_dtype():
    return np.float64 if jnp.result_type(float) == jnp.float64 else np.float32


@pytest.mark.usefixtures("either_x64")
def test_lower_confidence_bound_matches_scipy():
    ks, ns, alphas = map(
        np.array, zip(*[(k, n, a) for (k, n), a in itertools.product(GRID, ALPHAS)])
    )
    got = np.asarray(jc.stats.lower_confidence_bound(ks, ns, alphas))
    assert got.dtype == _current_dtype()
    want = np.array([_beta_lower(*args) for args in zip(ks, ns, alphas)])
    _assert_close(got, want, ns)
    # The complement is accurate by itself where the bound is close to one.
    with jax.enable_x64(True):
        complement = np.asarray(lower_bound_pair(ks, ns, alphas)[1])
    want_complement = np.array(
        [
            scipy.stats.beta.isf(a, n - k + 1, k) if 0 < k < n else 1 - _beta_lower(k, n, a)
            for k, n, a in zip(ks, ns, alphas)
        ]
    )
    interior = (ks > 0) & (ks < ns)  # elsewhere SciPy's 1 - alpha^(1/n) loses the digits
    _assert_close(np.asarray(complement)[interior], want_complement[interior], ns[interior])
    np.testing.assert_allclose(np.asarray(complement), want_complement, rtol=1e-6)


@pytest.mark.usefixtures("either_x64")
def test_clopper_pearson_matches_statsmodels():
    for (k, n), alpha in itertools.product(GRID, (0.002, 0.01, 0.1)):
        lower, upper = jc.stats.clopper_pearson(k, n, alpha)
        assert lower.dtype == upper.dtype == _current_dtype()
        want_lower, want_upper = proportion_confint(k, n, alpha=alpha, method="beta")
        _assert_close(lower, want_lower, n)
        _assert_close(upper, want_upper, n)


@pytest.mark.usefixtures("either_x64")
def test_cohen_lower_bound_equals_statsmodels_at_twice_alpha():
    k, n, alpha = 99_950, 100_000, 0.001
    want = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    _assert_close(jc.stats.lower_confidence_bound(k, n, alpha), want, n)


@pytest.mark.usefixtures("either_x64")
def test_upper_confidence_bound_matches_scipy():
    for k, n in GRID:
        want = 1.0 if k == n else scipy.stats.beta.isf(0.001, k + 1, n - k)
        _assert_close(jc.stats.upper_confidence_bound(k, n, 0.001), want, n)


@pytest.mark.usefixtures("either_x64")
def test_edge_cases_closed_form():
    assert float(jc.stats.lower_confidence_bound(0, 20, 0.01)) == 0.0
    assert float(jc.stats.upper_confidence_bound(20, 20, 0.01)) == 1.0
    np.testing.assert_allclose(
        jc.stats.lower_confidence_bound(20, 20, 0.01), 0.01 ** (1 / 20), rtol=1e-6
    )
    np.testing.assert_allclose(jc.stats.lower_confidence_bound(1, 1, 0.05), 0.05, rtol=1e-6)


@pytest.mark.usefixtures("either_x64")
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


@pytest.mark.usefixtures("either_x64")
def test_binom_pvalue_matches_scipy():
    cases = [
        (k, n, p)
        for n in (1, 2, 9, 10, 100, 1001)
        for p in (0.5, 0.3, 0.01, 0.9)
        for k in sorted({0, 1, n // 4, n // 2, n - 1, n})
        if 0 <= k <= n
    ]
    cases += [(4_999_000, 10**7, 0.5), (5_010_000, 10**7, 0.5), (123, 1000, 0.01)]
    cases += [(285, 2304, 0.5), (6274, 17546, 0.5)]  # p-values 4.5e-321 and 9.5e-316
    k, n, p = map(np.array, zip(*cases))
    got = np.asarray(jc.stats.binom_pvalue(k, n, p))
    assert got.dtype == _current_dtype()
    want = np.array([scipy.stats.binomtest(int(a), int(b), float(c)).pvalue for a, b, c in cases])
    _assert_close(got, want, n)
    assert np.all(got >= want)  # p-values below the smallest normal float read as it


def test_float32_radius_is_accurate_through_the_complement():
    """In float32, Phi^{-1} of pA_lower from its complement keeps the radius accurate."""
    n = 100_000
    ks = np.array([60_000, 90_000, 99_000, 99_900, 99_990, 99_999, 100_000])
    with jax.enable_x64(False):
        complement = jc.stats.upper_confidence_bound(n - ks, n, 0.001)  # 1 - pA_lower, up
    assert complement.dtype == jnp.float32
    radius = -scipy.stats.norm.ppf(np.asarray(complement, np.float64))
    want = scipy.stats.norm.ppf([_beta_lower(k, n, 0.001) for k in ks])
    np.testing.assert_allclose(radius, want, rtol=2e-5)
    assert np.all(radius <= want)


def test_jit_and_batch():
    with jax.enable_x64(True):
        f = jax.jit(jc.stats.lower_confidence_bound)
        k = jnp.array([[5, 6], [7, 8]])
        got = f(k, 10, 0.01)
        assert got.shape == (2, 2) and got.dtype == jnp.float64
        np.testing.assert_array_equal(got, jc.stats.lower_confidence_bound(k, 10, 0.01))
        assert jax.jit(jc.stats.binom_pvalue)(3, 10, 0.5).shape == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda k: jax.jit(jc.stats.lower_confidence_bound)(k, 10, 0.01),
        lambda k: jax.vmap(jc.stats.upper_confidence_bound, (0, None, None))(k, 10, 0.01),
        lambda k: jax.jit(jc.stats.clopper_pearson)(k, 10, 0.01),
        lambda k: jax.jit(jc.stats.binom_pvalue)(k, 10),
    ],
    ids=["jit_lower", "vmap_upper", "jit_clopper_pearson", "jit_binom_pvalue"],
)
def test_float32_is_refused_under_jit(call):
    """Traced float32 counts cannot be checked (nor held above 2^24): x64 is required."""
    with jax.enable_x64(False), pytest.raises(TypeError, match="jax.enable_x64"):
        call(jnp.array([3, 4]))


# --------------------------------------------------------------- outward rounding, float32


def _decimal_lower(k, n, alpha):
    """The exact lower bound to 40 digits: P(Binomial(n, p) >= k) = alpha, bisected in log p."""
    alpha = decimal.Decimal(alpha)

    def tail(p):
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))

    lo, hi = decimal.Decimal(-800), decimal.Decimal(0)  # log p
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if tail(mid.exp()) > alpha else (mid, hi)
    return lo.exp()


def _decimal_complement_n_minus_1(n, alpha):
    """1 - the exact lower bound at k = n - 1: (1 - c)^(n - 1) (1 + (n - 1) c) = alpha."""
    n, log_alpha = decimal.Decimal(n), decimal.Decimal(alpha).ln()
    lo, hi = decimal.Decimal(0), decimal.Decimal(1) - decimal.Decimal(10) ** -40
    for _ in range(200):
        c = (lo + hi) / 2
        above = (n - 1) * (1 - c).ln() + (1 + (n - 1) * c).ln() > log_alpha
        lo, hi = (c, hi) if above else (lo, c)
    return hi


def test_float32_counts_above_2_24_are_computed_in_float64():
    """Before: in float32, k = 2^25 - 1 rounded to n and gave 0.99999982 (exact 0.99999972),
    and k = n = 1 at alpha 1e-10 gave 1.0000000827e-10 (exact: alpha)."""
    with decimal.localcontext(prec=60), jax.enable_x64(False):
        n = 2**25
        exact = 1 - _decimal_complement_n_minus_1(n, 1e-3)
        got = jc.stats.lower_confidence_bound(n - 1, n, 1e-3)
        assert got.dtype == jnp.float32
        assert decimal.Decimal(float(got)) <= exact
        assert decimal.Decimal(float(np.nextafter(got, np.float32(1)))) > exact  # the float below
        upper = jc.stats.upper_confidence_bound(1, n, 1e-3)  # the same bound for the failures
        assert decimal.Decimal(float(upper)) >= 1 - exact
        tiny = jc.stats.lower_confidence_bound(1, 1, 1e-10)
        assert decimal.Decimal(float(tiny)) <= decimal.Decimal(1e-10)
        assert float(tiny) > 1e-10 * (1 - 1e-7)


def _outward_cases():
    rng = np.random.default_rng(5)
    cases = []
    for n in (1, 2, 7, 50, 1000, 100_000, 2**24 + 1):
        ks = {0, 1, 2, n // 3, n // 2, n - 2, n - 1, n, *rng.integers(0, n + 1, 2).tolist()}
        for k in sorted(x for x in ks if 0 <= x <= n):
            cases += [(k, n, alpha) for alpha in (1e-10, 1e-3, 0.05, 0.5, 0.999)]
    return [np.array(v) for v in zip(*cases)]


@pytest.mark.usefixtures("either_x64")
def test_bounds_are_rounded_outward_against_scipy():
    """A lower bound never above the exact one, an upper bound never below, in either dtype."""
    k, n, alpha = _outward_cases()
    lower = jc.stats.lower_confidence_bound(k, n, alpha)
    upper = jc.stats.upper_confidence_bound(k, n, alpha)
    two_lower, two_upper = jc.stats.clopper_pearson(k, n, alpha)
    assert lower.dtype == _current_dtype()
    ulp = np.finfo(lower.dtype).eps
    interior = (k > 0) & (k < n)
    want_lower = np.where(k == n, alpha ** (1.0 / n), 0.0)
    want_lower[interior] = scipy.stats.beta.ppf(alpha, k, n - k + 1)[interior]
    want_upper = np.where(k == 0, -np.expm1(np.log(alpha) / n), 1.0)
    want_upper[interior] = scipy.stats.beta.isf(alpha, k + 1, n - k)[interior]
    half_lower = scipy.stats.beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1)
    half_upper = scipy.stats.beta.isf(alpha / 2, k + 1, np.maximum(n - k, 1))
    for got, want, sign in [
        (lower, want_lower, 1),
        (upper, want_upper, -1),
        (two_lower, np.where(k == 0, 0.0, half_lower), 1),
        (two_upper, np.where(k == n, 1.0, half_upper), -1),
    ]:
        got = np.asarray(got, np.float64)
        assert np.all(sign * (got - want) <= 0)
        # ... and tight: within 1e-6 of the smaller of want and 1 - want, plus a rounding.
        assert np.all(sign * (want - got) <= 1e-6 * np.minimum(want, 1 - want) + 2 * ulp * want)


def test_bounds_are_rounded_outward_at_extreme_alpha():
    """alpha down to 1e-300, against 40-digit binomial sums (SciPy is off by 4e-4 there)."""
    cases = [(k, n, a) for n in (1, 7, 50) for k in sorted({1, 2, n // 2, n - 1, n}) if 0 < k <= n
             for a in (1e-300, 1e-100, 1e-20)]  # fmt: skip
    k, n, alpha = map(np.array, zip(*cases))
    with decimal.localcontext(prec=40):
        exact = [_decimal_lower(*case) for case in cases]
        with jax.enable_x64(True):
            lower, complement = (np.asarray(v) for v in lower_bound_pair(k, n, alpha))
        for got, got_complement, want in zip(lower, complement, exact):
            assert decimal.Decimal(float(got)) <= want
            # Tight too, but where Newton cannot reach 1e-301 in its steps (k = 1 at alpha
            # 1e-300) the answer is the bracket's safe end, 0.
            assert got >= float(want) * (1 - 1e-6) or (got == 0 and want < 1e-290)
            assert decimal.Decimal(float(got_complement)) >= 1 - want
        single = np.asarray(jc.stats.lower_confidence_bound(k, n, alpha))  # float32
        for got, want in zip(single, exact):
            assert decimal.Decimal(float(got)) <= want


@pytest.mark.usefixtures("either_x64")
def test_binom_pvalue_is_rounded_up_against_scipy():
    cases = [
        (k, n, p)
        for n in (1, 10, 1001, 10**5, 2**24 + 1, 2**25)
        for p in (0.5, 0.3, 0.01)
        for k in sorted({0, 1, int(n * p) - 3 * int(np.sqrt(n)), n // 2 + 1, n - 1, n})
        if 0 <= k <= n
    ]
    k, n, p = map(np.array, zip(*cases))
    got = np.asarray(jc.stats.binom_pvalue(k, n, p), np.float64)
    want = np.array([scipy.stats.binomtest(int(a), int(b), float(c)).pvalue for a, b, c in cases])
    assert np.all(got >= want)
    x64 = _current_dtype() == np.float64
    tiny = 1e-300 if x64 else 2 * float(np.finfo(np.float32).smallest_subnormal)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=tiny)


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
        (lambda: jc.stats.lower_confidence_bound(2**53, 2**53 + 2, 0.1), "2\\^53"),
        (lambda: jc.stats.binom_pvalue(2**53, 2**54, 0.5), "2\\^53"),
    ],
)
@pytest.mark.usefixtures("either_x64")
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
