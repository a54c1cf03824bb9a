"""Interval bound propagation (IBP) through a traced network.

Every linear layer's output interval is widened by the rounding allowance of its terms
(`jaxcert._rounding`): with centre c, radius r and the layer's map L + b, the terms have
magnitude at most |L|(|c| + r) + |b| <= |c'| + 2 |L|(|c| + r), where c' = L c + b is the output
centre, so every interval, intermediate ones included, holds the exact real-arithmetic values.

Bounds of C @ f(x) fold C into the linear equations at the end of the network ("elision",
Gowal et al. 2018): the rows of C travel backwards through every linear equation after the last
activations, as in CROWN, and only then meet intervals, those of the activations' outputs (or of
the input). |C W| <= |C| |W| entrywise, so this is never looser than bounding the logits first,
and usually much tighter.

References:
  S. Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
  Robust Models", 2018.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._rounding import full_precision, lowered
from .._sets import InputSet
from .._sharding import shard_batch, unpad
from ..graph import Network
from ._interval import Interval, widened
from ._linear import abs_linear, affine, backward_step
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


def _activation(eq, values):
    """The activation's range over its input's interval (`jaxcert._activations`)."""
    bounds = values[0]
    return Interval(*eq.activation.interval(bounds.lower, bounds.upper, *values[1:]))


RULES = {"linear": _linear, "activation": _activation}


def ibp_environment(net, lower, upper):
    """Run IBP on one example (shapes (1, ...)); return every variable's value or Interval."""
    return net.interpret(Interval(lower, upper), RULES)[0]


def ibp(net: Network, spec: InputSet, C: ArrayLike | None = None) -> Interval:
    """Interval bounds of the network's outputs (or of C @ outputs) over an input set.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set (`LinfBall`, `L2Ball`, `L1Ball`, `Box`) over a batch of B inputs.
      C: optional specification matrix (B, K, num_outputs); the bounds are then of C @ f(x),
        with C folded into the network's last linear equations (module docstring).

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
@full_precision
def _ibp(net, spec, C):
    def one(example, c):
        lower, upper = example.box()
        env = ibp_environment(net, lower[None], upper[None])
        if c is None:
            out = env[net.graph.output_var]
            return Interval(out.lower[0], out.upper[0])
        rows = c.astype(net.graph.output_var.dtype).reshape(-1, *net.graph.output_var.shape)
        lows = _elided_lower(net, env, jnp.concatenate([rows, -rows]))
        k = rows.shape[0]
        return Interval(lows[:k], -lows[k:])

    return jax.vmap(one)(spec, C)


def _elided_lower(net, env, rows):
    """Rounding-safe lower bounds of <row_k, output>: the rows go backwards through the linear
    equations; where they stop (an activation's output, the input) they meet IBP intervals."""
    coefficients = {net.graph.output_var: rows}
    constant = jnp.zeros(rows.shape[0], rows.dtype)
    scale = jnp.zeros(rows.shape[0], rows.dtype)
    for eq in reversed(net.equations):
        if eq.kind != "linear" or eq.outputs[0] not in coefficients:
            continue
        term, magnitude, inputs, grads = backward_step(eq, env, coefficients.pop(eq.outputs[0]))
        constant, scale = constant + term, scale + magnitude
        for v, g in zip(inputs, grads):
            coefficients[v] = coefficients[v] + g if v in coefficients else g
    for v, a in coefficients.items():
        box = env[v]
        a = a.reshape(a.shape[0], -1)
        lower, upper = box.lower.reshape(1, -1), box.upper.reshape(1, -1)
        constant = constant + jnp.sum(jnp.maximum(a, 0) * lower + jnp.minimum(a, 0) * upper, 1)
        scale = scale + jnp.sum(jnp.abs(a) * jnp.maximum(jnp.abs(lower), jnp.abs(upper)), 1)
    return lowered(constant, scale, rows.dtype)
