"""Exact (Clopper-Pearson) confidence bounds for a binomial proportion.

The one-sided 1 - alpha lower bound for k successes in n trials is the alpha-quantile of
Beta(k, n - k + 1) (0 when k = 0, alpha^(1/n) when k = n); the upper bound is the
(1 - alpha)-quantile of Beta(k + 1, n - k) (1 when k = n).

References:
  C. J. Clopper, E. S. Pearson, "The use of confidence or fiducial limits illustrated in the
  case of the binomial", Biometrika, 1934.
"""

import jax
import jax.numpy as jnp

from .. import _validate
from ._beta import beta_isf


@jax.jit
def lower_bound_pair(k, n, alpha):
    """The one-sided 1 - alpha lower bound as a pair (p_lower, 1 - p_lower).

    Both members are accurate to their own relative precision: near 1 it is the complement
    1 - p_lower that keeps the digits (what a certified radius needs, since Phi^{-1} is steep
    there). Pure JAX, no argument checks: jit-able and batched by broadcasting.
    """
    dtype = jnp.result_type(float)
    k, n, alpha = (jnp.asarray(v, dtype) for v in (k, n, alpha))
    k, n, alpha = jnp.broadcast_arrays(k, n, alpha)
    interior = (k > 0) & (k < n)
    a = jnp.where(interior, n - k + 1.0, 2.0)
    b = jnp.where(interior, k, 2.0)
    complement, lower = beta_isf(a, b, alpha)
    # k = n: the bound solves p^n = alpha exactly.
    all_complement = -jnp.expm1(jnp.log(alpha) / n)
    lower = jnp.where(k == n, 1.0 - all_complement, jnp.where(k == 0, 0.0, lower))
    complement = jnp.where(k == n, all_complement, jnp.where(k == 0, 1.0, complement))
    return lower, complement


def lower_confidence_bound(k, n, alpha):
    """One-sided 1 - alpha Clopper-Pearson lower bound of a binomial proportion.

    This is Cohen et al.'s pA_lower (statsmodels `proportion_confint(k, n, alpha=2 * alpha,
    method="beta")[0]`). Batched by broadcasting and jit-able; float64 when x64 is enabled.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array >= 1.
      alpha: error level in (0, 1).

    Returns:
      The lower bound, an array of the broadcast shape of the arguments.

    Examples:
      >>> float(lower_confidence_bound(10, 10, 0.001))  # alpha ** (1 / 10)
      0.501...

    References:
      Clopper and Pearson, Biometrika 1934; Cohen, Rosenfeld, Kolter, "Certified Adversarial
      Robustness via Randomized Smoothing", ICML 2019.
    """
    _check(k, n, alpha)
    return lower_bound_pair(k, n, alpha)[0]


def upper_confidence_bound(k, n, alpha):
    """One-sided 1 - alpha Clopper-Pearson upper bound of a binomial proportion.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array >= 1.
      alpha: error level in (0, 1).

    Returns:
      The upper bound, 1 minus the lower bound of the n - k failures.
    """
    _check(k, n, alpha)
    k, n = jnp.asarray(k), jnp.asarray(n)
    return lower_bound_pair(n - k, n, alpha)[1]


def clopper_pearson(k, n, alpha):
    """Two-sided 1 - alpha Clopper-Pearson interval (each side at level alpha / 2).

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array >= 1.
      alpha: error level in (0, 1).

    Returns:
      `(lower, upper)`, as statsmodels `proportion_confint(k, n, alpha, method="beta")`.
    """
    _check(k, n, alpha)
    k, n = jnp.asarray(k), jnp.asarray(n)
    half = jnp.asarray(alpha) / 2
    return lower_bound_pair(k, n, half)[0], lower_bound_pair(n - k, n, half)[1]


def _check(k, n, alpha):
    _validate.check_counts("k", k, "n", n)
    _validate.check_open_unit("alpha", alpha)
