"""Exact (Clopper-Pearson) confidence bounds for a binomial proportion.

The one-sided 1 - alpha lower bound for k successes in n trials is the alpha-quantile of
Beta(k, n - k + 1) (0 when k = 0, alpha^(1/n) when k = n); the upper bound is the
(1 - alpha)-quantile of Beta(k + 1, n - k) (1 when k = n).

Every bound is computed in float64 and rounded outward (see `_float64`): a lower bound is never
above the exact one and an upper bound never below, in float32 too.

References:
  C. J. Clopper, E. S. Pearson, "The use of confidence or fiducial limits illustrated in the
  case of the binomial", Biometrika, 1934.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .. import _validate
from ._beta import beta_isf
from ._float64 import check_trials, down, in_float64, require_float64, slack, up


@jax.jit
def lower_bound_pair(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """The one-sided 1 - alpha lower bound as a pair (p_lower, 1 - p_lower), in float64.

    Both members are accurate to their own relative precision: near 1 it is the complement
    1 - p_lower that keeps the digits (what a certified radius needs, since Phi^{-1} is steep
    there). Both are rounded outward: p_lower never above the exact bound, the complement never
    below the exact complement. Pure JAX, no argument checks: jit-able and batched by
    broadcasting; needs x64 (TypeError otherwise).

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array with 1 <= n <= 2^53.
      alpha: error level in (0, 1).

    Returns:
      `(p_lower, 1 - p_lower)`, float64 arrays of the broadcast shape of the arguments.

    Raises:
      TypeError: x64 is disabled.
    """
    require_float64()
    k, n, alpha = (jnp.asarray(v, jnp.float64) for v in (k, n, alpha))
    k, n, alpha = jnp.broadcast_arrays(k, n, alpha)
    interior = (k > 0) & (k < n)
    a = jnp.where(interior, n - k + 1.0, 2.0)
    b = jnp.where(interior, k, 2.0)
    complement, lower = beta_isf(a, b, alpha)
    # k = n: the bound solves p^n = alpha exactly; each member from its own accurate formula.
    log_root = jnp.log(alpha) / n
    lower = jnp.where(k == n, jnp.exp(log_root), jnp.where(k == 0, 0.0, lower))
    complement = jnp.where(k == n, -jnp.expm1(log_root), jnp.where(k == 0, 1.0, complement))
    # Outward: widen the small member by the slack, and take the other as 1 minus it.
    wide = slack(n)
    small_lower = lower <= complement
    lower, complement = (
        jnp.where(small_lower, lower * (1.0 - wide), down(1.0 - complement * (1.0 + wide))),
        jnp.where(small_lower, up(1.0 - lower * (1.0 - wide)), complement * (1.0 + wide)),
    )
    return jnp.clip(lower, 0.0, 1.0), jnp.clip(complement, 0.0, 1.0)


def lower_confidence_bound(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> jax.Array:
    """One-sided 1 - alpha Clopper-Pearson lower bound of a binomial proportion.

    This is Cohen et al.'s pA_lower (statsmodels `proportion_confint(k, n, alpha=2 * alpha,
    method="beta")[0]`), rounded down: never above the exact bound. Batched by broadcasting.
    Computed in float64: with x64 disabled, on the host, the result rounded down to float32
    (float32 itself cannot hold counts above 2^24); under jit or vmap x64 must be enabled.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array with 1 <= n <= 2^53.
      alpha: error level in (0, 1).

    Returns:
      The lower bound, an array of the broadcast shape of the arguments.

    Raises:
      ValueError: counts or alpha out of range.
      TypeError: traced arguments (inside jit or vmap) with x64 disabled.

    Examples:
      >>> float(lower_confidence_bound(10, 10, 0.001))  # alpha ** (1 / 10)
      0.501...

    References:
      Clopper and Pearson, Biometrika 1934; Cohen, Rosenfeld, Kolter, "Certified Adversarial
      Robustness via Randomized Smoothing", ICML 2019.
    """
    _check(k, n, alpha)
    return in_float64(lambda *args: lower_bound_pair(*args)[:1], [-1], k, n, alpha)[0]


def upper_confidence_bound(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> jax.Array:
    """One-sided 1 - alpha Clopper-Pearson upper bound of a binomial proportion.

    Computed as `lower_confidence_bound` is, and rounded up: never below the exact bound.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array with 1 <= n <= 2^53.
      alpha: error level in (0, 1).

    Returns:
      The upper bound, 1 minus the lower bound of the n - k failures.

    Raises:
      ValueError: counts or alpha out of range.
      TypeError: traced arguments (inside jit or vmap) with x64 disabled.
    """
    _check(k, n, alpha)

    def upper(k, n, alpha):
        return lower_bound_pair(n - k, n, alpha)[1:]

    return in_float64(upper, [1], k, n, alpha)[0]


def clopper_pearson(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Two-sided 1 - alpha Clopper-Pearson interval (each side at level alpha / 2).

    Computed as `lower_confidence_bound` is; the lower end rounded down, the upper end up.

    Args:
      k: successes, integer-valued array with 0 <= k <= n.
      n: trials, integer-valued array with 1 <= n <= 2^53.
      alpha: error level in (0, 1).

    Returns:
      `(lower, upper)`, as statsmodels `proportion_confint(k, n, alpha, method="beta")`.

    Raises:
      ValueError: counts or alpha out of range.
      TypeError: traced arguments (inside jit or vmap) with x64 disabled.
    """
    _check(k, n, alpha)

    def interval(k, n, alpha):
        half = jnp.asarray(alpha, jnp.float64) / 2
        return lower_bound_pair(k, n, half)[0], lower_bound_pair(n - k, n, half)[1]

    return in_float64(interval, [-1, 1], k, n, alpha)


def _check(k, n, alpha):
    _validate.check_counts("k", k, "n", n)
    check_trials(n)
    _validate.check_open_unit("alpha", alpha)
