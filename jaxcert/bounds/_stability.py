"""How many ReLUs are stable (always active or always inactive) over an input set.

An exact verifier needs a binary variable for every unstable ReLU only, so these counts predict
MILP time; training with `jaxcert.train.relu_stability` lowers them (Xiao et al., 2019).
"""

import jax
import jax.numpy as jnp

from .._sets import InputSet
from ..graph import Network, read
from ._crown import intermediate_bounds
from ._ibp import ibp_environment


def relu_counts(
    net: Network, spec: InputSet, *, method: str = "crown"
) -> list[dict[str, jax.Array]]:
    """Per piecewise-linear activation layer and per input set: the numbers of active, inactive
    and unstable neurons.

    A neuron of an activation with its breakpoint at t (0 for a ReLU, c for `max(v, c)`) is
    active when its input's lower bound is >= t, inactive when otherwise the upper bound is
    <= t, and unstable when neither; looser bounds (IBP) count more neurons as unstable. Smooth
    activations (sigmoid, tanh) have no breakpoint and are left out.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set over a batch of B inputs.
      method: bounds of the activation inputs, "crown" or "ibp" (see `intermediate_bounds`).

    Returns:
      A list with one dict per piecewise-linear activation in `net.activations()` order,
      mapping "active", "inactive" and "unstable" to integer arrays of shape (B,).

    References:
      K. Y. Xiao et al., "Training for Faster Adversarial Robustness Verification via Inducing
      ReLU Stability", ICLR 2019.
    """
    counts = []
    for b, t in zip(intermediate_bounds(net, spec, method=method), breakpoints(net)):
        if t is None:
            continue
        lower = (b.lower - t[0]).reshape(b.lower.shape[0], -1)
        upper = (b.upper - t[0]).reshape(b.upper.shape[0], -1)
        active = jnp.sum(lower >= 0, axis=1)
        inactive = jnp.sum((upper <= 0) & (lower < 0), axis=1)
        counts.append(
            {"active": active, "inactive": inactive, "unstable": lower.shape[1] - active - inactive}
        )
    return counts


def breakpoints(net: Network) -> list[jax.Array | None]:
    """Per activation of the network, in `net.activations()` order, the breakpoint of a
    piecewise-linear one (an array of its input's shape, with the leading 1: 0 for a ReLU, c
    for `max(v, c)`), or None for a smooth one (sigmoid, tanh).

    Args:
      net: a traced network (`jaxcert.trace`).

    Returns:
      A list with one array or None per activation.
    """
    zeros = jnp.zeros((1, *net.input_shape), net.graph.input_var.dtype)
    env = ibp_environment(net, zeros, zeros)  # only the constants are read
    points = []
    for eq in net.activations():
        if eq.activation.kink is None:
            points.append(None)
            continue
        t = eq.activation.kink(*(read(env, v) for v in eq.inputs[1:]))[0]
        points.append(jnp.broadcast_to(jnp.asarray(t, zeros.dtype), eq.inputs[0].shape))
    return points
