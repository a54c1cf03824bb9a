"""The exact two-sided binomial test.

The p-value is the total probability, under Binomial(n, p), of every outcome no more likely than
the one observed (the "minlike" rule of R's binom.test and SciPy's binomtest, with the same
relative tolerance 1e-7 for ties). Probabilities come from Loader's saddle-point form and the
tail sums from the incomplete beta function, so n may be in the tens of millions.

The p-value is computed in float64 and rounded up (see `_float64`): never smaller than the
exact one, in float32 too.

References:
  C. Loader, "Fast and accurate computation of binomial probabilities", 2000.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from .. import _validate
from ._beta import _bd0, _stirlerr, beta_tails
from ._float64 import check_trials, in_float64, require_float64, slack

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_TIE_TOLERANCE = math.log1p(1e-7)


def _logpmf(j, n, p, q):
    """log P(X = j) for X ~ Binomial(n, p), q = 1 - p; j may be any real in [0, n]."""
    inner = (j > 0) & (j < n)
    js = jnp.where(inner, j, 1.0)
    ns = jnp.where(inner, n, 2.0)
    log_inner = (
        _stirlerr(ns)
        - _stirlerr(js)
        - _stirlerr(ns - js)
        - _bd0(js, ns * p)
        - _bd0(ns - js, ns * q)
        + 0.5 * jnp.log(ns / (js * (ns - js)))
        - _HALF_LOG_2PI
    )
    return jnp.where(j <= 0, n * jnp.log(q), jnp.where(j >= n, n * jnp.log(p), log_inner))


def _cdf(j, n, p, q):
    """P(X <= j)."""
    inner = (j >= 0) & (j < n)
    a = jnp.where(inner, n - j, 1.0)
    b = jnp.where(inner, j + 1.0, 1.0)
    value = beta_tails(a, b, q, p)[0]
    return jnp.where(j < 0, 0.0, jnp.where(j >= n, 1.0, value))


def _sf_from(j, n, p, q):
    """P(X >= j)."""
    inner = (j >= 1) & (j <= n)
    a = jnp.where(inner, j, 1.0)
    b = jnp.where(inner, n - j + 1.0, 1.0)
    value = beta_tails(a, b, p, q)[0]
    return jnp.where(j < 1, 1.0, jnp.where(j > n, 0.0, value))


def _first_true(predicate, lo, hi):
    """Smallest integer j in [lo, hi] where a monotone (False..True) predicate holds, or hi + 1."""

    def body(_, bounds):
        left, right = bounds  # the answer lies in [left, right]
        mid = jnp.floor((left + right) / 2)
        hit = predicate(mid)
        return jnp.where(hit, left, mid + 1), jnp.where(hit, mid, right)

    return lax.fori_loop(0, 64, body, (lo, hi + 1.0))[0]


def binom_pvalue(k: ArrayLike, n: ArrayLike, p: ArrayLike = 0.5) -> jax.Array:
    """Two-sided exact binomial test p-value of k successes in n trials against proportion p.

    Equal to `scipy.stats.binomtest(k, n, p).pvalue`, rounded up: never below the exact value.
    Batched by broadcasting. Computed in float64: with x64 disabled, on the host, the result
    rounded up to float32; under jit or vmap x64 must be enabled. Cohen et al.'s PREDICT
    abstains unless the p-value of the top count nA against nA + nB trials at p = 1/2 is at
    most alpha.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array with 1 <= n <= 2^53.
      p: the proportion under the null hypothesis, in (0, 1).

    Returns:
      The p-value, an array of the broadcast shape of the arguments.

    Raises:
      ValueError: counts or p out of range.
      TypeError: traced arguments (inside jit or vmap) with x64 disabled.

    References:
      C. J. Clopper, E. S. Pearson, Biometrika 1934; Cohen, Rosenfeld, Kolter, "Certified
      Adversarial Robustness via Randomized Smoothing", ICML 2019 (PREDICT).
    """
    _validate.check_counts("k", k, "n", n)
    check_trials(n)
    _validate.check_open_unit("p", p)
    return in_float64(lambda *args: (_binom_pvalue(*args),), [1], k, n, p)[0]


@jax.jit
def _binom_pvalue(k, n, p):
    require_float64()
    k, n, p = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float64) for v in (k, n, p)))
    q = 1.0 - p
    mean = n * p
    threshold = _logpmf(k, n, p, q) + _LOG_TIE_TOLERANCE

    def no_more_likely(j):
        return _logpmf(j, n, p, q) <= threshold

    # k below the mean: the other tail starts at the first j >= ceil(mean) no more likely than k.
    first = _first_true(no_more_likely, jnp.ceil(mean), n)
    below = _cdf(k, n, p, q) + _sf_from(first, n, p, q)
    # k above the mean: the other tail ends at the last j <= floor(mean) no more likely than k.
    last = _first_true(lambda j: ~no_more_likely(j), jnp.zeros_like(n), jnp.floor(mean)) - 1.0
    above = _cdf(last, n, p, q) + _sf_from(k, n, p, q)
    pvalue = jnp.where(k < mean, below, jnp.where(k > mean, above, 1.0))
    # Rounded up; a p-value below the smallest normal float64 (which underflows) reads as it.
    return jnp.clip(pvalue * (1.0 + slack(n)), jnp.finfo(jnp.float64).tiny, 1.0)
