"""Deciding a VNN-LIB property: no input in the boxes reaches the unsafe output region.

Each (box, disjunct) pair is an independent question: is {Y = f(X) : X in box, C @ Y <= d}
empty? CROWN answers first (if some row has min c_k . f > d_k over the box, the conjunction
cannot hold); the rest go to a feasibility MILP with the disjunct's constraints added, whose
solution is re-run through the network before it is reported.
"""

import time
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from ortools.math_opt.python import mathopt

from .._sets import Box
from ..bounds._crown import crown, intermediate_bounds
from ..bounds._interval import Interval
from ..bounds._lp import build_model
from ._race import SOLVER_TYPES, solve_parameters

TOLERANCE = 1e-6  # a counterexample must satisfy C @ f(x) <= d + TOLERANCE in the model itself


class PropertyResult(NamedTuple):
    """The answer for a property.

    Attributes:
      result: "unsat" (the property holds), "sat" (a counterexample), or "unknown".
      counterexample: (x, y) as NumPy arrays when "sat", else None.
      seconds: wall-clock time.
    """

    result: str
    counterexample: tuple | None
    seconds: float


def verify_property(net, prop, *, solver="highs", time_limit=60.0):
    """Decide a `jaxcert.vnnlib.Property` on a traced network with flat inputs and outputs.

    Args:
      net: a traced network whose input has `len(box lower)` entries and whose output has as
        many entries as the property's Y.
      prop: the parsed property (`jaxcert.vnnlib.read_vnnlib`).
      solver: "highs" or "scip" for the MILPs.
      time_limit: seconds for the whole property.

    Returns:
      A `PropertyResult`.

    Raises:
      ValueError: an unknown solver, time_limit <= 0, or a property whose sizes do not match
        the network.

    References:
      V. Tjeng, K. Xiao and R. Tedrake, "Evaluating Robustness of Neural Networks with Mixed
      Integer Programming", ICLR 2019; VNN-COMP's VNN-LIB format (https://www.vnnlib.org/).
    """
    if solver not in ("highs", "scip"):
        raise ValueError(f"unknown solver {solver!r}; use 'highs' or 'scip'")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    began = time.perf_counter()
    n_in, n_out = int(np.prod(net.input_shape)), int(np.prod(net.output_shape))
    for lower, _ in prop.boxes:
        if lower.size != n_in:
            raise ValueError(f"the property has {lower.size} inputs, the network {n_in}")
    for C, _ in prop.unsafe:
        if C.shape[1] != n_out:
            raise ValueError(f"the property has {C.shape[1]} outputs, the network {n_out}")
    unknown = False
    for lower, upper in prop.boxes:
        shape = (1, *net.input_shape)
        box = Box(jnp.asarray(lower.reshape(shape), jnp.float32),
                  jnp.asarray(upper.reshape(shape), jnp.float32))  # fmt: skip
        relu_bounds = [Interval(b.lower[0], b.upper[0]) for b in intermediate_bounds(net, box)]
        example = Box(box.lower[0], box.upper[0])
        for C, d in prop.unsafe:
            rows = jnp.asarray(C[None], jnp.float32)
            lowest = np.asarray(crown(net, box, rows, lower_only=True).lower)[0]
            if np.any(lowest > d + TOLERANCE):
                continue  # this disjunct is empty over the box
            left = time_limit - (time.perf_counter() - began)
            found = _feasible(net, example, relu_bounds, C, d, solver, left) if left > 0 else None
            if found == "infeasible":
                continue
            if found is not None:
                return PropertyResult("sat", found, time.perf_counter() - began)
            unknown = True
    return PropertyResult("unknown" if unknown else "unsat", None, time.perf_counter() - began)


def _feasible(net, example, relu_bounds, C, d, solver, time_limit):
    """A confirmed (x, y) in the disjunct, "infeasible", or None (no answer)."""
    model, inputs, outputs, _ = build_model(net, example, relu_bounds, exact=True)
    for row, bound in zip(C, d):
        model.add_linear_constraint(
            mathopt.fast_sum(c * y for c, y in zip(row, outputs) if c != 0) <= bound
        )
    params = solve_parameters(solver, time_limit, None, "decide")
    result = mathopt.solve(model, SOLVER_TYPES[solver], params=params)
    if result.termination.reason == mathopt.TerminationReason.INFEASIBLE:
        return "infeasible"
    if not result.has_primal_feasible_solution():
        return None
    lower, upper = (np.asarray(v, np.float64).ravel() for v in example.box())
    x = np.clip([result.variable_values(v) for v in inputs], lower, upper)
    y = np.asarray(net(jnp.asarray(x.reshape(1, *net.input_shape), jnp.float32)))[0].ravel()
    if np.all(C @ y <= d + TOLERANCE):
        return x, y
    return None
