"""Interval bounds as a registered pytree."""

from typing import NamedTuple

import jax

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

