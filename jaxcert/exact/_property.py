"""Deciding a VNN-LIB property: no input of a case's box reaches the case's unsafe region.

Each (box, disjunct) pair is an independent question: is {Y = f(X) : X in box, C @ Y <= d}
empty? CROWN answers first (if some row has min c_k . f > d_k over the box, the conjunction
cannot hold); a PGD search then looks for a counterexample among the rest, and what remains goes
to a feasibility MILP with the disjunct's constraints added, whose solution is re-run through
the network before it is reported.
"""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ortools.math_opt.python import mathopt

from .._sets import Box
from ..attacks import pgd
from ..bounds._crown import crown, intermediate_bounds
from ..bounds._interval import Interval
from ..bounds._lp import build_model
from ..vnnlib import Property
from ._race import SOLVER_TYPES, SOLVERS, solve_parameters

TOLERANCE = 1e-6  # a counterexample must satisfy C @ f(x) <= d + TOLERANCE in the model itself


class PropertyResult(NamedTuple):
    """The answer for a property.

    Attributes:
      result: "unsat" (the property holds), "sat" (a counterexample), "timeout" (the time limit
        ran out first) or "unknown" (a solver stopped without an answer, or its witness did not
        survive the check in the network's own arithmetic).
      counterexample: (x, y) as flat NumPy arrays when "sat", else None.
      seconds: wall-clock time.
    """

    result: str
    counterexample: tuple | None
    seconds: float


def check_options(solver, time_limit, attack_steps):
    """Refuse options of `verify_property` before any work (time_limit None: not checked).

    Raises:
      ValueError: a solver other than "highs" or "scip", a time_limit that is not > 0, or
        attack_steps that is not an integer >= 0.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    if isinstance(attack_steps, bool) or not isinstance(attack_steps, int) or attack_steps < 0:
        raise ValueError(f"attack_steps must be an integer >= 0, got {attack_steps!r}")


def verify_property(net, prop, *, solver="highs", time_limit=60.0, attack_steps=50, seed=0):
    """Decide a `jaxcert.vnnlib.Property` on a traced network.

    For each case (an input box and its unsafe region): one CROWN pass bounds every row of every
    disjunct (a disjunct with a row whose lower bound exceeds its threshold is empty); a PGD
    search over the box looks for a point in the remaining disjuncts; the disjuncts still open
    are then decided by a feasibility MILP each. Every counterexample is re-run through the
    network and must satisfy its disjunct to within `TOLERANCE` (1e-6).

    Args:
      net: a traced network whose input has as many entries as the property's X and whose
        output as many as its Y (both in row-major order).
      prop: the parsed property (`jaxcert.vnnlib.read_vnnlib`).
      solver: "highs" or "scip" for the MILPs.
      time_limit: seconds for the whole property.
      attack_steps: PGD steps of the search for a counterexample (0 skips it).
      seed: seed of the search's random starts.

    Returns:
      A `PropertyResult`.

    Raises:
      TypeError: `prop` is not a Property.
      ValueError: an unknown solver, time_limit <= 0, attack_steps < 0, or a property whose
        sizes do not match the network.

    References:
      V. Tjeng, K. Xiao and R. Tedrake, "Evaluating Robustness of Neural Networks with Mixed
      Integer Programming", ICLR 2019; VNN-COMP's VNN-LIB format (https://www.vnnlib.org/).
    """
    if not isinstance(prop, Property):
        raise TypeError(f"prop must be a jaxcert.vnnlib.Property (read_vnnlib), got {type(prop)}")
    check_options(solver, time_limit, attack_steps)
    began = time.perf_counter()
    n_in, n_out = int(np.prod(net.input_shape)), int(np.prod(net.output_shape))
    for case in prop.cases:
        if case.lower.size != n_in:
            raise ValueError(f"the property has {case.lower.size} inputs, the network {n_in}")
        for C, _ in case.unsafe:
            if C.shape[1] != n_out:
                raise ValueError(f"the property has {C.shape[1]} outputs, the network {n_out}")
    deadline = began + time_limit
    milps = []  # (how far CROWN is from ruling the disjunct out, the case's MILP, C, d)
    for number, (lower, upper, unsafe) in enumerate(prop.cases):
        if time.perf_counter() >= deadline:  # e.g. a property split into very many boxes
            return PropertyResult("timeout", None, time.perf_counter() - began)
        shape = (1, *net.input_shape)
        box = Box(*(jnp.asarray(b.reshape(shape)) for b in _float32_box(lower, upper, True)))
        inner = Box(*(jnp.asarray(b.reshape(shape)) for b in _float32_box(lower, upper, False)))
        rows = np.concatenate([C for C, _ in unsafe])
        ends = np.cumsum([len(C) for C, _ in unsafe])[:-1]
        relu_bounds = intermediate_bounds(net, box)
        bound = crown(net, box, rows[None], intermediate=relu_bounds, lower_only=True).lower
        lowest = np.split(np.asarray(bound)[0], ends)
        gaps = [np.max(low - d) for (_, d), low in zip(unsafe, lowest)]
        open_ = [(C, d) for (C, d), gap in zip(unsafe, gaps) if not gap > TOLERANCE]
        if not open_:
            continue  # every disjunct is empty over this box
        if attack_steps:
            found = _search(net, inner, open_, attack_steps, jax.random.key(seed + number))
            if found is not None:
                return PropertyResult("sat", found, time.perf_counter() - began)
        milp = _CaseMILP(net, box, inner, relu_bounds)
        milps += [(g, milp, C, d) for (C, d), g in zip(unsafe, gaps) if g <= TOLERANCE]
    # The disjuncts furthest from a proof first, as they are likelier to hold a counterexample;
    # each MILP may use all the time left (solvers overrun short limits, so no shares).
    status = "unsat"
    for _, milp, C, d in sorted(milps, key=lambda m: m[0]):
        found = milp.feasible(C, d, solver, deadline)
        if isinstance(found, tuple):
            return PropertyResult("sat", found, time.perf_counter() - began)
        if found == "timeout":
            return PropertyResult("timeout", None, time.perf_counter() - began)
        if found == "unknown":
            status = "unknown"
    return PropertyResult(status, None, time.perf_counter() - began)


def _float32_box(lower, upper, outward):
    """The box in float32, rounded outwards (it contains the float64 box: for the bounds and the
    MILP) or inwards (every float32 point in it lies in the float64 box: for counterexamples;
    where no float32 number lies in [lower_i, upper_i], the nearest one is taken)."""
    lo, hi = lower.astype(np.float32), upper.astype(np.float32)
    down, up = np.float32(-np.inf), np.float32(np.inf)
    if outward:
        return np.where(lo > lower, np.nextafter(lo, down), lo), np.where(
            hi < upper, np.nextafter(hi, up), hi
        )
    low = np.where(lo < lower, np.nextafter(lo, up), lo)
    high = np.where(hi > upper, np.nextafter(hi, down), hi)
    empty = low > high
    return np.where(empty, lo, low), np.where(empty, lo, high)


def _confirmed(net, x, unsafe):
    """(x, y) with y = net(x) when y is in some disjunct of `unsafe`, else None."""
    x = np.asarray(x, np.float32)
    y = np.asarray(net(jnp.asarray(x.reshape(1, *net.input_shape))))[0].ravel()
    if any(np.all(C @ y <= d + TOLERANCE) for C, d in unsafe):
        return x.ravel(), y
    return None


def _search(net, box, unsafe, steps, key, starts=16):
    """A counterexample found by PGD on the box, or None.

    The objective is min over disjuncts of max over rows of c . f(x) - d, which is <= 0 exactly
    in the unsafe region; `attacks.pgd` minimises it through two logits whose margin is its
    negative, from `starts` random points of the box.
    """
    size = max(len(C) for C, _ in unsafe)
    C = np.zeros((len(unsafe), size, unsafe[0][0].shape[1]), np.float32)
    d = np.full((len(unsafe), size), np.finfo(np.float32).max, np.float32)  # padding: never binds
    for j, (Cj, dj) in enumerate(unsafe):
        C[j, : len(Cj)], d[j, : len(dj)] = Cj, dj
    center = (box.lower + box.upper) / 2
    radius = float(jnp.max(box.upper - box.lower)) / 2
    x = jnp.repeat(center, starts, axis=0)
    z, margin = pgd(
        _unsafe_logits,
        (net, jnp.asarray(C), jnp.asarray(d)),
        x,
        jnp.zeros(starts, jnp.int32),
        key,
        radius,
        steps=steps,
        random_start=True,
        lower=jnp.repeat(box.lower, starts, axis=0),
        upper=jnp.repeat(box.upper, starts, axis=0),
    )
    best = int(jnp.argmax(margin))
    return _confirmed(net, z[best], unsafe)


def _unsafe_logits(params, z):
    """Logits (g, 0) with g = min_j max_k (C_jk . f(z) - d_jk): the margin -g is > 0 when unsafe."""
    net, C, d = params
    y = net(z).reshape(z.shape[0], -1)
    gap = jnp.max(jnp.einsum("jkn,bn->bjk", C, y) - d, axis=2)
    return jnp.stack([jnp.min(gap, axis=1), jnp.zeros(z.shape[0], y.dtype)], axis=1)


class _CaseMILP:
    """The MILP of one case's box, built on first use and shared by the case's disjuncts.

    The MILP runs over the outer box (float32, rounded outwards); a solution is moved into the
    inner box (float32 values inside the property's box) before it is checked in the network.
    """

    def __init__(self, net, outer, inner, relu_bounds):
        self.net = net
        self.outer = Box(outer.lower[0], outer.upper[0])
        self.inner = Box(inner.lower[0], inner.upper[0])
        self.relu_bounds = [Interval(b.lower[0], b.upper[0]) for b in relu_bounds]
        self.built = None

    def feasible(self, C, d, solver, deadline):
        """A confirmed (x, y) with C @ y <= d, "infeasible", "timeout" or "unknown"."""
        if self.built is None:
            self.built = build_model(self.net, self.outer, self.relu_bounds, exact=True)
        model, inputs, outputs, _ = self.built
        added = [
            model.add_linear_constraint(
                mathopt.fast_sum(c * y for c, y in zip(row, outputs) if c != 0) <= bound
            )
            for row, bound in zip(C, d)
        ]
        try:
            left = deadline - time.perf_counter()
            if left <= 0:
                return "timeout"
            params = solve_parameters(solver, left, None, "decide")
            result = mathopt.solve(model, SOLVER_TYPES[solver], params=params)
        finally:
            for constraint in added:
                model.delete_linear_constraint(constraint)
        if result.termination.reason == mathopt.TerminationReason.INFEASIBLE:
            return "infeasible"
        if result.has_primal_feasible_solution():
            lower, upper = (np.asarray(v, np.float64).ravel() for v in self.inner.box())
            x = np.clip([result.variable_values(v) for v in inputs], lower, upper)
            found = _confirmed(self.net, x, [(C, d)])
            if found is not None:
                return found
        return "timeout" if result.termination.limit == mathopt.Limit.TIME else "unknown"
