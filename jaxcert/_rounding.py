"""How far a computed bound must clear zero before jaxcert counts it as a proof.

Bounds are computed in floating point (float32 unless the inputs are float64). Every operation
rounds its result by a relative error of at most eps / 2 (eps = 2^-23 in float32), and a bound is
a sum of many rounded products, so a bound computed as +3e-6 may stand for a true value below
zero. jaxcert therefore reads a computed lower bound `b` of a quantity as a proof that the
quantity is positive only when

    b > allowance(scale, dtype) = ROUNDING_EPS * eps(dtype) * scale,

where `scale` bounds the magnitude of the terms that were summed to obtain `b` (for a linear
bound, the sum of the absolute values of its terms). With ROUNDING_EPS = 512 the allowance covers
a relative error of 512 machine epsilons of the terms (6.1e-5 in float32, 1.1e-13 in float64):
far more than the error of summing the terms, even for deep networks, and still small beside the
margins that certified models reach. It is an allowance, not interval arithmetic with outward
rounding: the guarantee is that of exact real arithmetic on the network's float weights, with
every proof required to clear the rounding of its own computation. Whether the float32 network
itself, evaluated in another order, can round across the decision boundary is out of scope, as
for every verifier of the field.

The allowance presumes float32 products: on GPUs JAX's default float32 matrix product may round
its operands to tensorfloat32 (10 bits), on TPUs to bfloat16, errors of 1e-3 relative and more.
Every bound computation is therefore traced under `full_precision`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

ROUNDING_EPS = 512


def allowance(scale, dtype):
    """The rounding allowance for a bound whose terms have total magnitude `scale`.

    Args:
      scale: a bound on the sum of the absolute values of the terms of the computed bound
        (array or float, >= 0).
      dtype: the floating-point type the bound was computed in.

    Returns:
      ROUNDING_EPS * eps(dtype) * scale, of the shape of `scale`.
    """
    return ROUNDING_EPS * float(np.finfo(np.dtype(dtype)).eps) * jnp.abs(scale)


def full_precision(fn):
    """`fn` with every matrix product and convolution it traces at the full precision of its
    operands' type (`jax.default_matmul_precision("highest")`): put beneath `jax.jit`."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return traced


def lowered(bound, scale, dtype):
    """A computed lower bound made safe against rounding: bound - allowance(scale, dtype)."""
    return bound - allowance(scale, dtype)


def raised(bound, scale, dtype):
    """A computed upper bound made safe against rounding: bound + allowance(scale, dtype)."""
    return bound + allowance(scale, dtype)


def rounded_box(lower, upper, dtype, *, outward):
    """The float64 box [lower, upper] in `dtype`, rounded outwards (it contains the exact box: for
    bounds and MILPs) or inwards (every `dtype` point of it lies in the exact box: for
    counterexamples; where no `dtype` number lies in [lower_i, upper_i], the nearest one)."""
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    lo, hi = lower.astype(dtype), upper.astype(dtype)
    down, up = np.asarray(-np.inf, dtype), np.asarray(np.inf, dtype)
    if outward:
        return np.where(lo > lower, np.nextafter(lo, down), lo), np.where(
            hi < upper, np.nextafter(hi, up), hi
        )
    low = np.where(lo < lower, np.nextafter(lo, up), lo)
    high = np.where(hi > upper, np.nextafter(hi, down), hi)
    empty = low > high
    return np.where(empty, lo, low), np.where(empty, lo, high)
