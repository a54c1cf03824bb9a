"""The triangle linear-programming (LP) relaxation of a ReLU network, solved exactly per bound.

Every scalar entry of every input-dependent value of the network becomes one LP variable. A
linear equation becomes equality constraints out = L(in) + b, with the matrix of L read off the
traced equation by forward-mode differentiation (dense, so meant for small networks). A ReLU
z = relu(v) with pre-activation bounds l <= v <= u becomes z = v when l >= 0, z = 0 when u <= 0,
and otherwise the triangle z >= 0, z >= v, z <= u (v - l) / (u - l), its convex hull on [l, u].
For a fixed set of intermediate bounds this is the tightest bound that treats every ReLU on its
own, so it is the reference that single-neuron relaxations such as CROWN are compared against.

The LPs are solved on the host with OR-Tools MathOpt, one model per example and two solves (min
and max) per specification row; nothing here is jitted or differentiable.

References:
  R. Ehlers, "Formal Verification of Piece-Wise Linear Feed-Forward Neural Networks", ATVA 2017.
  E. Wong and J. Z. Kolter, "Provable Defenses against Adversarial Examples via the Convex Outer
  Adversarial Polytope", ICML 2018.
  V. Tjeng, K. Xiao and R. Tedrake, "Evaluating Robustness of Neural Networks with Mixed
  Integer Programming", ICLR 2019.
"""

import jax
import jax.numpy as jnp
import numpy as np
from ortools.math_opt.python import mathopt

from .._sets import L1Ball, L2Ball
from ..graph._trace import read
from ._ibp import ibp_environment
from ._interval import Interval
from ._linear import affine, bias, zeros_for
from ._spec import check_inputs, check_relu_bounds

# Simplex solvers: their optimum is a vertex, feasible and optimal up to tolerances of ~1e-7 to
# 1e-6 (PDLP, a first-order method, is accurate only to a much looser tolerance and is refused).
_SOLVERS = {"glop": mathopt.SolverType.GLOP, "highs": mathopt.SolverType.HIGHS}
# Each bound is moved outwards by MARGIN * (1 + sum_k |c_k v_k|), the magnitude of the
# objective's terms at the optimum, to absorb the solver's tolerances (~1e-7 to 1e-6). The margin
# also exceeds float32's relative rounding error (6e-8), so rounding the float64 result to the
# network's dtype cannot move a bound back inwards past the LP optimum.
MARGIN = 1e-6


def lp(net, spec, C=None, *, intermediate="ibp", solver="glop"):
    """Bounds of the network's outputs (or of C @ outputs) from the triangle LP relaxation.

    For each example and each row c_k of C, solves min and max of c_k^T f(z) over the LP
    relaxation of the network on the input set (in float64), then moves each bound outwards by
    `MARGIN * (1 + magnitude)` (MARGIN = 1e-6), where magnitude is sum_k |c_k f_k| at the
    optimum, for the solver's tolerances and the rounding to the network's dtype. The ReLU
    bounds it starts from are themselves rounding-safe (`ibp`, `intermediate_bounds`).

    Args:
      net: a traced network (`jaxcert.trace`); small, since every linear layer is turned into a
        dense matrix.
      spec: an input set over a batch of B inputs: `LinfBall` or `Box` (variable bounds) or
        `L1Ball` (auxiliary variables t >= |z - x| with sum(t) <= eps), each intersected with
        the data box. `L2Ball` is not polyhedral and raises ValueError.
      C: optional specification matrix (B, K, num_outputs); without it, the outputs are bounded.
      intermediate: the pre-activation bounds of the ReLUs: "ibp" (interval bound propagation),
        "crown" (`intermediate_bounds(net, spec, method="crown")`), or a list with one `Interval`
        per ReLU in `net.relus()` order, each of shape (B, *pre-activation shape without the
        leading 1). They must be valid over `spec`; tighter ones give a tighter LP.
      solver: "glop" (OR-Tools' simplex, default) or "highs" (HiGHS through MathOpt).

    Returns:
      An `Interval` of shape (B, num_outputs), or (B, K) with C.

    Raises:
      ValueError: for an L2Ball, an unknown solver or malformed intermediate bounds.
      RuntimeError: when an LP does not terminate optimally (the reason is given).

    References:
      Ehlers, 2017; Wong and Kolter, 2018.
    """
    check_inputs(net, spec, C)
    if solver not in _SOLVERS:
        raise ValueError(
            f"unknown LP solver {solver!r}; use one of {sorted(_SOLVERS)} (first-order solvers "
            "such as PDLP are only approximate, so they cannot give sound bounds)"
        )
    if isinstance(spec, L2Ball):
        raise ValueError(
            "L2Ball is not a polyhedron, so the LP relaxation cannot encode it; use crown or ibp "
            "for L2Ball, or an LinfBall/L1Ball that contains it"
        )
    relu_bounds = _intermediate_bounds(net, spec, intermediate)
    num_outputs = int(np.prod(net.output_shape))
    lower, upper = [], []
    for b in range(spec.batch_size):
        example = jax.tree.map(lambda a, b=b: a[b], spec)
        bounds = None
        if relu_bounds is not None:
            bounds = [Interval(bound.lower[b], bound.upper[b]) for bound in relu_bounds]
        model, _, outputs, _ = build_model(net, example, bounds)
        rows = np.eye(num_outputs) if C is None else np.asarray(C[b])
        lo, hi = _solve_rows(model, outputs, rows, solver)
        lower.append(lo)
        upper.append(hi)
    dtype = net.graph.output_var.dtype
    return Interval(jnp.asarray(np.stack(lower), dtype), jnp.asarray(np.stack(upper), dtype))


def _intermediate_bounds(net, spec, intermediate):
    """Batched pre-activation bounds as a list of Intervals, or None for IBP per example."""
    if isinstance(intermediate, str):
        if intermediate == "ibp":
            return None
        if intermediate == "crown":
            from ._crown import intermediate_bounds

            return intermediate_bounds(net, spec, method="crown")
        raise ValueError(
            f"intermediate must be 'ibp', 'crown' or a list of Intervals, got {intermediate!r}"
        )
    check_relu_bounds(net, spec, intermediate)
    return intermediate


def build_model(net, example, relu_bounds, *, exact=False):
    """The LP (or, with `exact`, the MILP) of one example.

    Args:
      net: the traced network.
      example: the input set of one example.
      relu_bounds: one Interval per ReLU's input for this example, or None for IBP's.
      exact: encode each unstable ReLU exactly with a binary variable (big-M, Tjeng et al.
        2019) instead of its triangle relaxation.

    Returns:
      (model, input variables, output variables, number of binary variables); the variable
      lists are flat, in the row-major order of the network's input and output.
    """
    model, x, lp_vars, binaries = _build(net, example, relu_bounds, exact)
    return model, x, lp_vars[net.graph.output_var], binaries


def tighten(net, example, relu_bounds, *, solver="glop"):
    """Pre-activation bounds tightened layer by layer by the LP relaxation.

    For each ReLU after the first, in order, the LP built from the (already tightened) bounds
    of the ReLUs before it is minimised and maximised over every unstable neuron's input; the
    results, moved outwards by the LP margin, are intersected with the given bounds (Tjeng,
    Xiao and Tedrake, 2019, progressive bounds tightening). Tighter bounds mean fewer binaries
    and smaller big-M constants in the MILP.

    Args:
      net: the traced network.
      example: the input set of one example.
      relu_bounds: one Interval per ReLU's input for this example (valid over the set).
      solver: "glop" or "highs".

    Returns:
      The tightened list of Intervals (NumPy float64).
    """
    bounds = [
        Interval(np.asarray(b.lower, np.float64), np.asarray(b.upper, np.float64))
        for b in relu_bounds
    ]
    relus = net.relus()
    for k in range(1, len(relus)):
        lower, upper = (b.ravel().copy() for b in bounds[k])
        unstable = np.flatnonzero((lower < 0) & (upper > 0))
        if unstable.size == 0:
            continue
        model, _, lp_vars, _ = _build(net, example, bounds, exact=False)
        rows = np.eye(lower.size)[unstable]
        low, high = _solve_rows(model, lp_vars[relus[k].inputs[0]], rows, solver)
        lower[unstable] = np.maximum(lower[unstable], low)
        upper[unstable] = np.minimum(upper[unstable], high)
        shape = bounds[k].lower.shape
        bounds[k] = Interval(lower.reshape(shape), upper.reshape(shape))
    return bounds


def _build(net, example, relu_bounds, exact):
    """build_model's work; returns the LP variables of every network variable as a dict."""
    lower, upper = example.box()
    env = ibp_environment(net, lower[None], upper[None])  # constants and IBP bounds
    if relu_bounds is None:
        relu_bounds = [env[eq.inputs[0]] for eq in net.relus()]
    relu_bounds = iter(relu_bounds)
    model = mathopt.Model()
    lo, hi = np.asarray(lower, np.float64).ravel(), np.asarray(upper, np.float64).ravel()
    x = [model.add_variable(lb=a, ub=b) for a, b in zip(lo, hi)]
    if isinstance(example, L1Ball):
        center = np.asarray(example.x, np.float64).ravel()
        t = [model.add_variable(lb=0.0) for _ in x]
        for xi, ti, ci in zip(x, t, center):
            model.add_linear_constraint(ti >= xi - ci)
            model.add_linear_constraint(ti >= ci - xi)
        model.add_linear_constraint(mathopt.fast_sum(t) <= float(example.eps))
    lp_vars = {net.graph.input_var: x}  # network variable -> flat list of LP variables
    for eq in net.equations:
        if eq.kind == "linear":
            values = [read(env, v) for v in eq.inputs]
            lp_vars[eq.outputs[0]] = _linear(model, eq, values, lp_vars)
        elif eq.kind == "relu":
            bound = next(relu_bounds)
            lp_vars[eq.outputs[0]] = _relu(model, lp_vars[eq.inputs[0]], bound, exact)
    binaries = sum(v.integer for v in model.variables())
    return model, x, lp_vars, binaries


def _linear(model, eq, values, lp_vars):
    """Output variables tied to the input-dependent operands by out = sum_i A_i in_i + b."""
    operands = [v for v, var in zip(eq.inputs, eq.variable) if var]
    jacobians = jax.jacfwd(affine(eq, values), argnums=tuple(range(len(operands))))(*zeros_for(eq))
    b = np.asarray(bias(eq, values), np.float64).ravel()
    matrices = [np.asarray(j, np.float64).reshape(b.size, -1) for j in jacobians]
    out = [model.add_variable() for _ in range(b.size)]
    for i in range(b.size):
        terms = [
            a[i, j] * lp_vars[v][j]
            for v, a in zip(operands, matrices)
            for j in np.flatnonzero(a[i])
        ]
        model.add_linear_constraint(out[i] - mathopt.fast_sum(terms) == b[i])
    return out


def _relu(model, v, bound, exact):
    """Variables for relu(v): v itself if active, 0 if inactive, else the triangle.

    With `exact`, an unstable ReLU instead gets a binary a and z <= v - l (1 - a), z <= u a,
    z >= v, z >= 0: z = relu(v) exactly (Tjeng, Xiao, Tedrake 2019).
    """
    lower = np.asarray(bound.lower, np.float64).ravel()
    upper = np.asarray(bound.upper, np.float64).ravel()
    out = []
    for vi, lo, hi in zip(v, lower, upper):
        if lo >= 0:
            out.append(vi)
        elif hi <= 0:
            out.append(model.add_variable(lb=0.0, ub=0.0))
        else:
            z = model.add_variable(lb=0.0, ub=hi)
            model.add_linear_constraint(z >= vi)
            if exact:
                a = model.add_binary_variable()
                model.add_linear_constraint(z <= vi - lo * (1 - a))
                model.add_linear_constraint(z <= hi * a)
            else:
                slope = hi / (hi - lo)
                model.add_linear_constraint(z <= slope * vi - slope * lo)
            out.append(z)
    return out


def _solve_rows(model, outputs, rows, solver):
    """Min and max of rows @ outputs over the model, each moved outwards by the margin."""
    lower, upper = np.empty(len(rows)), np.empty(len(rows))
    with mathopt.IncrementalSolver(model, _SOLVERS[solver]) as incremental:
        for k, row in enumerate(np.asarray(rows, np.float64)):
            objective = mathopt.fast_sum(c * v for c, v in zip(row, outputs) if c != 0)
            for maximize, result in ((False, lower), (True, upper)):
                model.objective.set_to_expression(objective)
                model.objective.is_maximize = maximize
                solved = incremental.solve()
                if solved.termination.reason != mathopt.TerminationReason.OPTIMAL:
                    raise RuntimeError(
                        f"the LP solver {solver!r} did not find an optimum: "
                        f"{solved.termination.reason.name} ({solved.termination.detail})"
                    )
                value = solved.objective_value()
                terms = solved.variable_values(list(outputs))
                magnitude = sum(abs(c * v) for c, v in zip(row, terms))
                slack = MARGIN * (1 + max(magnitude, abs(value)))
                result[k] = value + slack if maximize else value - slack
    return lower, upper
