"""Interval bound propagation (IBP) through a traced network.

Every linear layer's output interval is widened by the rounding allowance of its terms
(`jaxcert._rounding`): with centre c, radius r and the layer's map L + b, the terms have
magnitude at most |L|(|c| + r) + |b| <= |c'| + 2 |L|(|c| + r), where c' = L c + b is the output
centre, so every interval, intermediate ones included, holds the exact real-arithmetic values.

References:
  S. Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
  Robust Models", 2018.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._sets import InputSet
from .._sharding import shard_batch, unpad
from ..graph import Network
from ._interval import Interval, apply_spec, widened
from ._linear import abs_linear, affine
from ._spec import check_inputs


def _linear(eq, values):
    """Centre/radius form: centre through the affine map, radius through |L|, then widened."""
    centers = [v.center for v, var in zip(values, eq.variable) if var]
    radii = [v.radius for v, var in zip(values, eq.variable) if var]
    magnitudes = [jnp.abs(c) + r for c, r in zip(centers, radii)]
    center = affine(eq, values)(*centers)
    radius, magnitude = jax.vmap(lambda *v: abs_linear(eq, values, v))(
        *(jnp.stack(pair) for pair in zip(radii, magnitudes))
    )
    scale = jnp.abs(center) + 2 * magnitude  # >= |L|(|c| + r) + |b|, as |b| <= |c'| + |L||c|
    return widened(Interval(center - radius, center + radius), scale)


def _relu(eq, values):
    bounds = values[0]
    return Interval(jnp.maximum(bounds.lower, 0), jnp.maximum(bounds.upper, 0))


RULES = {"linear": _linear, "relu": _relu}


def ibp_environment(net, lower, upper):
    """Run IBP on one example (shapes (1, ...)); return every variable's value or Interval."""
    return net.interpret(Interval(lower, upper), RULES)[0]


def ibp(net: Network, spec: InputSet, C: ArrayLike | None = None) -> Interval:
    """Interval bounds of the network's outputs (or of C @ outputs) over an input set.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set (`LinfBall`, `L2Ball`, `L1Ball`, `Box`) over a batch of B inputs.
      C: optional specification matrix (B, K, num_outputs); the bounds are then of C @ f(x),
        computed from the output intervals.

    Returns:
      An `Interval` of shape (B, num_outputs), or (B, K) with C, rounding-safe (see the module
      docstring).

    References:
      Gowal et al., 2018.
    """
    check_inputs(net, spec, C)
    (spec, C), batch = shard_batch((spec, C))
    return unpad(_ibp(net, spec, C), batch)


@jax.jit
def _ibp(net, spec, C):
    def one(example):
        lower, upper = example.box()
        env = ibp_environment(net, lower[None], upper[None])
        out = env[net.graph.output_var]
        return Interval(out.lower[0], out.upper[0])

    bounds = jax.vmap(one)(spec)
    return bounds if C is None else apply_spec(bounds, C)
