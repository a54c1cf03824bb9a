"""The MILP of a piecewise-linear network (Tjeng, Xiao and Tedrake, 2019): the LP model of
`jaxcert.bounds.lp_model` with every unstable ReLU encoded exactly by a binary variable (every
piecewise-linear activation is encoded through a ReLU of its input minus its breakpoint), and
the LP tightening of the activation bounds that makes its big-M constants smaller. A network
with a smooth activation (sigmoid, tanh) has no such MILP and is refused by name.

References:
  V. Tjeng, K. Xiao and R. Tedrake, "Evaluating Robustness of Neural Networks with Mixed
  Integer Programming", ICLR 2019.
"""

import numpy as np

from ..bounds import Interval, breakpoints, lp_model, solve_rows
from ..graph import Network


def big_m(model, v, lower, upper):
    """z = relu(v) exactly for an unstable ReLU (lower < 0 < upper): a binary a with
    z >= v, z >= 0, z <= v - lower (1 - a), z <= upper a. Returns z."""
    z = model.add_variable(lb=0.0, ub=upper)
    model.add_linear_constraint(z >= v)
    a = model.add_binary_variable()
    model.add_linear_constraint(z <= v - lower * (1 - a))
    model.add_linear_constraint(z <= upper * a)
    return z


def smooth_activations(net: Network) -> list:
    """The network's activation equations that are not piecewise linear (no exact MILP)."""
    return [eq for eq in net.activations() if eq.activation.kink is None]


def check_piecewise_linear(net: Network) -> None:
    """Raise ValueError naming the first smooth activation of the network, if it has one."""
    smooth = smooth_activations(net)
    if smooth:
        raise ValueError(
            f"the MILP encodes piecewise-linear activations only, and this network has "
            f"{smooth[0].activation.name} (at {smooth[0].source}); bound it with "
            "jaxcert.bounds (crown, alpha-crown) instead"
        )


def milp_model(net, example, relu_bounds):
    """The MILP of one example.

    Args:
      net: the traced network (piecewise-linear activations only).
      example: the input set of one example.
      relu_bounds: one Interval per activation's input for this example, or None for IBP's.

    Returns:
      (model, input variables, output variables, number of binary variables); the variable
      lists are flat, in the row-major order of the network's input and output.
    """
    check_piecewise_linear(net)
    model, lp_vars = lp_model(net, example, relu_bounds, unstable_relu=big_m)
    binaries = sum(v.integer for v in model.variables())
    return model, lp_vars[net.graph.input_var], lp_vars[net.graph.output_var], binaries


def tighten(net, example, relu_bounds, *, solver="glop"):
    """Pre-activation bounds tightened layer by layer by the LP relaxation.

    For each activation after the first, in order, the LP built from the (already tightened)
    bounds of the activations before it is minimised and maximised over every unstable neuron's
    input (one whose bounds hold its breakpoint); the
    results, moved outwards by the LP margin, are intersected with the given bounds (Tjeng,
    Xiao and Tedrake, 2019, progressive bounds tightening). Tighter bounds mean fewer binaries
    and smaller big-M constants in the MILP.

    Args:
      net: the traced network.
      example: the input set of one example.
      relu_bounds: one Interval per activation's input for this example (valid over the set).
      solver: "glop" or "highs".

    Returns:
      The tightened list of Intervals (NumPy float64).
    """
    bounds = [
        Interval(np.asarray(b.lower, np.float64), np.asarray(b.upper, np.float64))
        for b in relu_bounds
    ]
    activations, points = net.activations(), breakpoints(net)
    for k in range(1, len(activations)):
        lower, upper = (b.ravel().copy() for b in bounds[k])
        t = np.zeros_like(lower) if points[k] is None else np.asarray(points[k], np.float64).ravel()
        unstable = np.flatnonzero((lower < t) & (upper > t))
        if unstable.size == 0:
            continue
        model, lp_vars = lp_model(net, example, bounds)
        rows = np.eye(lower.size)[unstable]
        low, high = solve_rows(model, lp_vars[activations[k].inputs[0]], rows, solver)
        lower[unstable] = np.maximum(lower[unstable], low)
        upper[unstable] = np.minimum(upper[unstable], high)
        shape = bounds[k].lower.shape
        bounds[k] = Interval(lower.reshape(shape), upper.reshape(shape))
    return bounds
