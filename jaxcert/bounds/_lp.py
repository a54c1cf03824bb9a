"""The triangle linear-programming (LP) relaxation of a network, solved exactly per bound.

Every scalar entry of every input-dependent value of the network becomes one LP variable. A
linear equation becomes equality constraints out = L(in) + b, with the matrix of L read off the
traced equation by forward-mode differentiation (dense, so meant for small networks). A ReLU
z = relu(v) with pre-activation bounds l <= v <= u becomes z = v when l >= 0, z = 0 when u <= 0,
and otherwise the triangle z >= 0, z >= v, z <= u (v - l) / (u - l), its convex hull on [l, u].
Every piecewise-linear activation with one breakpoint t is f(t) + left (v - t) + (right - left)
relu(v - t) (`jaxcert._activations`), so it gets the same triangle, again its convex hull; a
smooth one (sigmoid, tanh) is held between its two CROWN lines. For a fixed set of intermediate
bounds this is the tightest bound that treats every ReLU on its own, so it is the reference that
single-neuron relaxations such as CROWN are compared against.

The LPs are solved on the host with OR-Tools MathOpt, one model per example and two solves (min
and max) per specification row; nothing here is jitted or differentiable.

References:
  R. Ehlers, "Formal Verification of Piece-Wise Linear Feed-Forward Neural Networks", ATVA 2017.
  E. Wong and J. Z. Kolter, "Provable Defenses against Adversarial Examples via the Convex Outer
  Adversarial Polytope", ICML 2018.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from ortools.math_opt.python import mathopt

from .._rounding import full_precision, lowered
from .._sets import InputSet, L1Ball, L2Ball
from .._validate import check_choice
from ..graph import Network, Var, read
from ._crown import intermediate_bounds
from ._ibp import ibp_environment
from ._interval import Interval
from ._linear import affine, bias, zeros_for
from ._spec import check_activation_bounds, check_inputs

# Simplex solvers: their optimum is a vertex, feasible and optimal up to tolerances of ~1e-7 to
# 1e-6 (PDLP, a first-order method, is accurate only to a much looser tolerance and is refused).
_SOLVERS = {"glop": mathopt.SolverType.GLOP, "highs": mathopt.SolverType.HIGHS}
# Each bound is moved outwards by MARGIN * (1 + sum_k |c_k v_k|), the magnitude of the
# objective's terms at the optimum, to absorb the solver's tolerances (~1e-7 to 1e-6). The margin
# also exceeds float32's relative rounding error (6e-8), so rounding the float64 result to the
# network's dtype cannot move a bound back inwards past the LP optimum.
MARGIN = 1e-6


def lp(
    net: Network,
    spec: InputSet,
    C: ArrayLike | None = None,
    *,
    intermediate: str | Sequence[Interval] = "ibp",
    solver: str = "glop",
) -> Interval:
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
      intermediate: the pre-activation bounds of the activations: "ibp" (interval bound
        propagation), "crown" (`intermediate_bounds(net, spec, method="crown")`), or a list with
        one `Interval` per activation in `net.activations()` order, each of shape (B,
        *pre-activation shape without the leading 1). They must be valid over `spec`; tighter
        ones give a tighter LP.
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
    check_choice("LP solver", solver, _SOLVERS, " (first-order solvers such as PDLP are "
                 "only approximate, so they cannot give sound bounds)")  # fmt: skip
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
        model, lp_vars = lp_model(net, example, bounds)
        outputs = lp_vars[net.graph.output_var]
        rows = np.eye(num_outputs) if C is None else np.asarray(C[b])
        lo, hi = solve_rows(model, outputs, rows, solver)
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
            return intermediate_bounds(net, spec, method="crown")
        raise ValueError(
            f"intermediate must be 'ibp', 'crown' or a list of Intervals, got {intermediate!r}"
        )
    check_activation_bounds(net, spec, intermediate)
    return intermediate


def triangle(model, v, lower, upper):
    """The triangle relaxation of z = relu(v) for an unstable ReLU (lower < 0 < upper): a new
    variable 0 <= z <= upper with z >= v and z <= upper (v - lower) / (upper - lower), the convex
    hull of the ReLU on [lower, upper] (Ehlers, 2017). Returns z."""
    z = model.add_variable(lb=0.0, ub=upper)
    model.add_linear_constraint(z >= v)
    slope = upper / (upper - lower)
    model.add_linear_constraint(z <= slope * v - slope * lower)
    return z


def lp_model(
    net: Network,
    example: InputSet,
    relu_bounds: Sequence[Interval] | None,
    *,
    unstable_relu: Callable = triangle,
) -> tuple[mathopt.Model, dict[Var, list[mathopt.Variable]]]:
    """The MathOpt model of the network over one example's input set.

    Every scalar of every input-dependent value becomes a variable: a linear equation becomes
    equality constraints, an active ReLU (lower >= 0) is its input, an inactive one (upper <= 0)
    the constant 0, and an unstable one whatever `unstable_relu(model, v, lower, upper)` returns
    (the triangle relaxation by default; `jaxcert.exact` passes its exact big-M encoding); other
    piecewise-linear activations go through the same ReLU encoding (module docstring), smooth
    ones are held between their CROWN lines.

    Args:
      net: the traced network.
      example: the input set of one example.
      relu_bounds: one Interval per activation's input for this example, or None for IBP's.
      unstable_relu: the encoding of an unstable ReLU.

    Returns:
      (model, lp_vars): lp_vars maps each network variable (`net.graph.input_var`,
      `net.graph.output_var`, each activation's input, ...) to its flat list of model variables, in
      row-major order.
    """
    lower, upper = example.box()
    env = ibp_environment(net, lower[None], upper[None])  # constants and IBP bounds
    if relu_bounds is None:
        relu_bounds = [env[eq.inputs[0]] for eq in net.activations()]
    relu_bounds = iter(relu_bounds)
    model = mathopt.Model()
    # The set's box was rounded to the network's dtype: one step outwards holds the exact box.
    lo, hi = (
        np.nextafter(np.asarray(b), np.asarray(inf, np.asarray(b).dtype)).astype(np.float64).ravel()
        for b, inf in ((lower, -np.inf), (upper, np.inf))
    )
    x = [model.add_variable(lb=a, ub=b) for a, b in zip(lo, hi)]
    if isinstance(example, L1Ball):
        center = np.asarray(example.x, np.float64).ravel()
        t = [model.add_variable(lb=0.0, ub=float(example.eps)) for _ in x]
        for xi, ti, ci in zip(x, t, center):
            model.add_linear_constraint(ti >= xi - ci)
            model.add_linear_constraint(ti >= ci - xi)
        model.add_linear_constraint(mathopt.fast_sum(t) <= float(example.eps))
    lp_vars = {net.graph.input_var: x}  # network variable -> flat list of LP variables
    for eq in net.equations:
        if eq.kind == "linear":
            values = [read(env, v) for v in eq.inputs]
            lp_vars[eq.outputs[0]] = _linear(model, eq, values, lp_vars, env[eq.outputs[0]])
        elif eq.kind == "activation":
            bound = next(relu_bounds)
            constants = [read(env, v) for v in eq.inputs[1:]]
            encode = _kink if eq.activation.kink is not None else _between_lines
            lp_vars[eq.outputs[0]] = encode(
                model, eq, lp_vars[eq.inputs[0]], bound, constants, unstable_relu
            )
    return model, lp_vars


def _linear(model, eq, values, lp_vars, bounds):
    """Output variables tied to the input-dependent operands by out = sum_i A_i in_i + b.

    The variables are bounded by the (rounding-safe) interval `bounds` of the output, which
    every point of the relaxation satisfies; finite bounds make the safe dual bound finite.
    """
    operands = [v for v, var in zip(eq.inputs, eq.variable) if var]
    jacobian = jax.jacfwd(affine(eq, values), argnums=tuple(range(len(operands))))
    jacobians = full_precision(jacobian)(*zeros_for(eq))  # the weights as they are
    b = np.asarray(bias(eq, values), np.float64).ravel()
    matrices = [np.asarray(j, np.float64).reshape(b.size, -1) for j in jacobians]
    low, high = (np.asarray(v, np.float64).ravel() for v in bounds)
    out = [model.add_variable(lb=lo, ub=hi) for lo, hi in zip(low, high)]
    for i in range(b.size):
        terms = [
            a[i, j] * lp_vars[v][j]
            for v, a in zip(operands, matrices)
            for j in np.flatnonzero(a[i])
        ]
        model.add_linear_constraint(out[i] - mathopt.fast_sum(terms) == b[i])
    return out


def _kink(model, eq, v, bound, constants, unstable_relu):
    """Variables for f(v) = f(t) + left (v - t) + (right - left) relu(v - t): stable neurons
    (u <= t or l >= t) are affine in v, unstable ones take `unstable_relu` of v - t. A ReLU
    gets v itself when active, the constant 0 when inactive, and the encoding's variable."""
    shape = eq.inputs[0].shape
    t, left, right, ft = (
        np.broadcast_to(np.asarray(c, np.float64), shape).ravel()
        for c in eq.activation.kink(*constants)
    )
    lower = np.asarray(bound.lower, np.float64).ravel()
    upper = np.asarray(bound.upper, np.float64).ravel()
    f_lower = ft + np.where(lower < t, left, right) * (lower - t)
    f_upper = ft + np.where(upper < t, left, right) * (upper - t)
    inside = (lower < t) & (t < upper)
    low = np.minimum(np.minimum(f_lower, f_upper), np.where(inside, ft, np.inf))
    high = np.maximum(np.maximum(f_lower, f_upper), np.where(inside, ft, -np.inf))
    slack = 1e-12 * (1 + np.maximum(np.abs(low), np.abs(high)))  # float64 rounding of the range
    out = []
    for i, vi in enumerate(v):
        range_ = (low[i] - slack[i], high[i] + slack[i])
        if upper[i] <= t[i] or lower[i] >= t[i]:
            slope = left[i] if upper[i] <= t[i] else right[i]
            out.append(_affine(model, ft[i] - slope * t[i], [(slope, vi)], range_))
            continue
        shifted = vi if t[i] == 0 else vi - t[i]
        z = unstable_relu(model, shifted, lower[i] - t[i], upper[i] - t[i])
        terms = [(left[i], vi), (right[i] - left[i], z)]
        out.append(_affine(model, ft[i] - left[i] * t[i], terms, range_))
    return out


def _affine(model, constant, terms, range_):
    """A variable equal to constant + sum of coefficient * variable over `terms`, within
    `range_`: the variable itself for 1 * v, a fixed variable for a constant, else a new one
    tied by an equality."""
    terms = [(c, v) for c, v in terms if c != 0]
    if constant == 0 and len(terms) == 1 and terms[0][0] == 1:
        return terms[0][1]
    if not terms:
        return model.add_variable(lb=constant, ub=constant)
    y = model.add_variable(lb=range_[0], ub=range_[1])
    model.add_linear_constraint(y - mathopt.fast_sum(c * v for c, v in terms) == constant)
    return y


def _between_lines(model, eq, v, bound, constants, unstable_relu):
    """Variables for a smooth activation: each between its CROWN lines and in its range (the
    default option's lines, rounding-safe as `jaxcert._activations` builds them)."""
    del unstable_relu  # a smooth activation has no exact encoding
    low, high = bound
    lines = eq.activation.lines(
        low, high, *constants, params=eq.activation.params(low, high, *constants)
    )
    ls, li, us, ui = (np.asarray(a, np.float64).ravel() for a in lines)
    f_low, f_high = (
        np.asarray(a, np.float64).ravel() for a in eq.activation.interval(low, high, *constants)
    )
    out = []
    for i, vi in enumerate(v):
        y = model.add_variable(lb=f_low[i], ub=f_high[i])
        model.add_linear_constraint(y - ls[i] * vi >= li[i])
        model.add_linear_constraint(y - us[i] * vi <= ui[i])
        out.append(y)
    return out


def solve_rows(
    model: mathopt.Model, outputs: Sequence[mathopt.Variable], rows: ArrayLike, solver: str
) -> tuple[np.ndarray, np.ndarray]:
    """Safe lower and upper bounds of rows @ outputs over the model.

    `rows` is (K, len(outputs)); `solver` "glop" or "highs". Each LP is solved in float64, and
    its optimum is not taken as is (the solver's tolerances
    let it err by far more than float32 rounding on networks with large weights): the bound is
    the Lagrangian bound of the solver's dual values, recomputed here (`_dual_bound`), then
    rounded outwards to float32.

    Args:
      model: the MathOpt model (`lp_model`); its objective is overwritten.
      outputs: the model variables of the bounded values.
      rows: the specification rows, shape (K, len(outputs)).
      solver: "glop" or "highs".

    Returns:
      (lower, upper): NumPy arrays of shape (K,), float32 values held in float64.

    Raises:
      RuntimeError: when an LP does not terminate optimally (the reason is given).
    """
    constraints = _constraint_matrix(model)
    lower, upper = np.empty(len(rows)), np.empty(len(rows))
    with mathopt.IncrementalSolver(model, _SOLVERS[solver]) as incremental:
        for k, row in enumerate(np.asarray(rows, np.float64)):
            for sign, result in ((1.0, lower), (-1.0, upper)):
                objective = {v: sign * c for c, v in zip(row, outputs) if c != 0}
                model.objective.set_to_expression(
                    mathopt.fast_sum(c * v for v, c in objective.items())
                )
                model.objective.is_maximize = False
                solved = incremental.solve()
                if solved.termination.reason != mathopt.TerminationReason.OPTIMAL:
                    raise RuntimeError(
                        f"the LP solver {solver!r} did not find an optimum: "
                        f"{solved.termination.reason.name} ({solved.termination.detail})"
                    )
                bound = _dual_bound(constraints, objective, solved.dual_values())
                result[k] = sign * np.nextafter(np.float32(bound), np.float32(-np.inf))
    return lower, upper


def _constraint_matrix(model):
    """(variables, constraints, A, row lower, row upper, variable lower, variable upper)."""
    variables = list(model.variables())
    index = {v: j for j, v in enumerate(variables)}
    constraints = list(model.linear_constraints())
    A = np.zeros((len(constraints), len(variables)))
    for i, c in enumerate(constraints):
        for term in c.terms():
            A[i, index[term.variable]] += term.coefficient
    row_bounds = [np.array([getattr(c, b) for c in constraints], np.float64) for b in _BOUNDS]
    var_bounds = [np.array([getattr(v, b) for v in variables], np.float64) for b in _BOUNDS]
    return variables, constraints, A, *row_bounds, *var_bounds


_BOUNDS = ("lower_bound", "upper_bound")


def _dual_bound(constraints, objective, duals):
    """A lower bound of min c^T x over the model from any dual values y (Neumaier and
    Shcherbina, 2004): c^T x = y^T A x + (c - A^T y)^T x >= sum_i min over the row bounds of
    y_i (A x)_i + sum_j min over the variable bounds of (c - A^T y)_j x_j, computed in float64
    and lowered by its own rounding allowance. Duals of the wrong sign for a row without the
    needed bound count as zero; the result is -inf if a variable without the needed bound keeps
    a non-zero reduced cost.
    """
    variables, rows, A, row_low, row_high, var_low, var_high = constraints
    y = np.array([duals.get(c, 0.0) for c in rows], np.float64)
    y = np.where((y > 0) & np.isfinite(row_low) | (y < 0) & np.isfinite(row_high), y, 0.0)
    c = np.array([objective.get(v, 0.0) for v in variables], np.float64)
    reduced = c - A.T @ y
    row_terms = np.where(y > 0, y * np.where(y > 0, row_low, 0), y * np.where(y < 0, row_high, 0))
    var_terms = np.where(
        reduced > 0,
        reduced * np.where(reduced > 0, var_low, 0),
        reduced * np.where(reduced < 0, var_high, 0),
    )
    terms = np.concatenate([row_terms, var_terms])
    magnitude = np.sum(np.abs(terms)) + np.abs(A.T @ y).sum() + np.abs(c).sum()
    return float(lowered(np.sum(terms), magnitude, np.float64))
