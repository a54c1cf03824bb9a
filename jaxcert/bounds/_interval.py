"""Interval bounds as a registered pytree."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._rounding import lowered, raised


class Interval(NamedTuple):
    """Elementwise bounds lower <= value <= upper (a pytree: passes through jit, vmap, grad)."""

    lower: jax.Array
    upper: jax.Array

    @property
    def center(self):
        return (self.lower + self.upper) / 2

    @property
    def radius(self):
        return (self.upper - self.lower) / 2


def widened(bounds, scale):
    """`bounds` moved outwards by the rounding allowance of terms of total magnitude `scale`."""
    dtype = bounds.lower.dtype
    return Interval(lowered(bounds.lower, scale, dtype), raised(bounds.upper, scale, dtype))


def apply_spec(bounds, C):
    """Bounds of C @ v from elementwise bounds of v, for C of shape (..., K, n).

    Rounding-safe: widened by the allowance of |C| max(|lower|, |upper|).
    """
    C = C.astype(bounds.lower.dtype)
    c_pos, c_neg = jnp.maximum(C, 0), jnp.minimum(C, 0)
    lower = jnp.einsum("...kn,...n->...k", c_pos, bounds.lower) + jnp.einsum(
        "...kn,...n->...k", c_neg, bounds.upper
    )
    upper = jnp.einsum("...kn,...n->...k", c_pos, bounds.upper) + jnp.einsum(
        "...kn,...n->...k", c_neg, bounds.lower
    )
    magnitude = jnp.maximum(jnp.abs(bounds.lower), jnp.abs(bounds.upper))
    scale = jnp.einsum("...kn,...n->...k", jnp.abs(C), magnitude)
    return widened(Interval(lower, upper), scale)
