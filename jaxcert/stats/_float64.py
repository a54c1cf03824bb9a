"""Float64 for every statistic, and results rounded outward.

Clopper-Pearson bounds and binomial p-values are computed in float64 only. Float32 holds
integers exactly only up to 2^24 (k = 2^25 - 1 rounds to 2^25, which raises a lower bound) and
its precision is too coarse for the quantile inversion. With x64 disabled, concrete arguments
are therefore computed in float64 on the host and each result is rounded outward to float32;
inside jit or vmap (traced arguments) float32 is refused.

The float64 results are moved outward by a relative slack of (1024 + n) eps in their small
coordinate (p or 1 - p): a lower bound is never above the exact one, an upper bound never
below, a p-value never smaller. The algorithms' own error grows with the number of trials n;
measured against SciPy and against 60-digit solutions at n up to 2^40 it stays below 0.05 n eps,
so the slack is at least 20 times the error seen, and it costs nothing statistically (2e-11
relative at n = 10^5).
"""

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate

NEEDS_X64 = (
    "jaxcert.stats computes in float64: inside jit or vmap enable it first "
    "(`with jax.enable_x64(True):` or jax.config.update('jax_enable_x64', True)); "
    "outside jit it computes in float64 on the host by itself"
)
MAX_TRIALS = 2**53  # the largest count float64 holds with every integer below it
_SLACK_EPS = 1024.0


def check_trials(n):
    """Refuse trial counts above 2^53, which float64 cannot hold exactly."""
    nv = _validate.concrete(n)
    if nv is not None and np.any(nv > MAX_TRIALS):
        raise ValueError(
            f"n must be at most 2^53 = {MAX_TRIALS} (float64 holds every integer only up to "
            f"there), got {nv.max()}"
        )


def require_float64():
    """Refuse to trace a statistic in float32 (TypeError naming the fix)."""
    if jnp.result_type(float) != jnp.float64:
        raise TypeError(NEEDS_X64)


def slack(n):
    """The relative widening of a result computed from n trials."""
    return jnp.finfo(jnp.float64).eps * (_SLACK_EPS + n)


def down(value):
    """The next float64 below `value` (so a rounded difference stays below the exact one)."""
    return jnp.nextafter(value, -jnp.inf)


def up(value):
    """The next float64 above `value`."""
    return jnp.nextafter(value, jnp.inf)


def in_float64(fn, directions, *args):
    """`fn(*args)` in float64; with x64 off, on the host and rounded outward to float32.

    Args:
      fn: a statistic returning one array per entry of `directions`.
      directions: for each result, -1 to round it down (a lower bound) or +1 up (an upper
        bound, a p-value).
      *args: its arguments.

    Returns:
      The results, a tuple, float64 when x64 is enabled, else float32 rounded outward.

    Raises:
      TypeError: x64 is disabled and an argument is traced (inside jit or vmap).
    """
    if jnp.result_type(float) == jnp.float64:
        return fn(*args)
    if any(isinstance(a, jax.core.Tracer) for a in args):
        raise TypeError(NEEDS_X64)
    with jax.enable_x64(True):
        exact = [np.asarray(value, np.float64) for value in fn(*args)]
    rounded = []
    for value, direction in zip(exact, directions):
        single = value.astype(np.float32)
        outside = single > value if direction < 0 else single < value
        toward = np.float32(-np.inf if direction < 0 else np.inf)
        rounded.append(jnp.asarray(np.where(outside, np.nextafter(single, toward), single)))
    return tuple(rounded)
