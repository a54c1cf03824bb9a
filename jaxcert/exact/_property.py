"""Deciding a VNN-LIB property: no input of a case's box reaches the case's unsafe region.

Each (box, disjunct) pair is an independent question: is {Y = f(X) : X in box, C @ Y <= d}
empty? The network is a float32 computation, so near the region's boundary the answer depends
on rounding; every decision therefore keeps a tolerance `tol_k` per row of C (`tolerance`: the
rounding allowance of `jaxcert._rounding` for the magnitude of the row's outputs and of d_k, plus
the solvers' feasibility tolerance):

* a disjunct is empty ("unsat") only when the bounds or a MILP show that no input reaches
  C @ Y <= d + tol, a margin of tol beyond the region;
* a counterexample ("sat") is an input of the box whose outputs, computed by the network in its
  own arithmetic and again in float64, satisfy C @ y <= d - tol: inside the region by a margin
  (with the magnitude of the point's own outputs in place of the box's where that is smaller);
* a disjunct reachable only within the tolerance is "unknown", whoever looks for it.

CROWN answers first (a row with min c_k . f - d_k > tol_k over the box rules the disjunct out);
a PGD search then looks for a counterexample among the rest, and what remains goes to a MILP per
disjunct: first the decision of C @ Y <= d + tol, then, if its solution is not a counterexample,
the minimum of max_k (c_k . Y - d_k) / tol_k, whose best point is checked in the network.

The time limit is kept between phases: each bound pass, the search and each MILP starts only when
the time left exceeds what the same phase took before, the MILP is built with the clock checked
at every ReLU layer, and the solvers get only the time left. A compiled computation cannot be
stopped once started, so a first bound pass (which includes compiling it) may overrun; the
benchmark runner `jaxcert.vnncomp.run_benchmark` enforces the limit on top by running each
instance in a worker process that it replaces when it overruns.
"""

import contextlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ortools.math_opt.python import mathopt

from .._rounding import allowance, rounded_box
from .._sets import Box, Property
from .._validate import check_choice, check_count
from ..attacks import pgd
from ..bounds import Interval, crown, intermediate_bounds
from ..graph import Network
from ._bab import BRANCHING, branch_and_bound, choose_split
from ._clock import Clock, OutOfTime
from ._encoding import milp_model, smooth_activations
from ._float64 import forward_float64
from ._race import SOLVERS, Race, solve_here
from ._verify import STRATEGIES

FEASIBILITY = 1e-6  # the primal feasibility tolerance of HiGHS and SCIP (absolute)
LOCAL_STEPS, LOCAL_SEARCHES = 20, 8  # PGD around candidate points of branch and bound


class PropertyResult(NamedTuple):
    """The answer for a property.

    Attributes:
      result: "unsat" (the property holds), "sat" (a counterexample), "timeout" (the time limit
        ran out first) or "unknown" (the unsafe region is reachable only within the tolerance,
        or a solver stopped without an answer).
      counterexample: (x, y) as flat NumPy arrays when "sat", else None.
      seconds: wall-clock time.
      domains: sub-domains bounded by branch and bound (0 without it).
    """

    result: str
    counterexample: tuple | None
    seconds: float
    domains: int = 0


def check_property_options(solver: str, time_limit: float | None, attack_steps: int,
                           strategy: str = "auto") -> None:  # fmt: skip
    """Refuse options of `verify_property` before any work (time_limit None: not checked).

    Args:
      solver: "race", "highs" or "scip".
      time_limit: seconds (> 0), or None to leave it unchecked.
      attack_steps: PGD steps (an integer >= 0).
      strategy: "auto", "bab" or "milp".

    Returns:
      None.

    Raises:
      ValueError: a solver other than "race", "highs" or "scip", a time_limit that is not > 0,
        attack_steps that is not an integer >= 0, or an unknown strategy.
    """
    check_choice("solver", solver, (*SOLVERS, "race"))
    check_choice("strategy", strategy, STRATEGIES)
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    check_count("attack_steps", attack_steps, minimum=0)


def tolerance(C, d, magnitude, dtype):
    """The tolerance of each row of an unsafe region C @ Y <= d.

    Args:
      C: the rows (K, n).
      d: the thresholds (K,).
      magnitude: a bound on |Y_j| over the input box (n,).
      dtype: the floating-point type the network computes in.

    Returns:
      tol (K,), float64: `allowance(|C| @ magnitude + |d|, dtype) + FEASIBILITY`.
    """
    scale = np.abs(C) @ np.asarray(magnitude, np.float64) + np.abs(d)
    return np.asarray(allowance(scale, dtype), np.float64) + FEASIBILITY


def verify_property(
    net: Network,
    prop: Property,
    *,
    solver: str = "race",
    time_limit: float = 60.0,
    attack_steps: int = 50,
    seed: int = 0,
    strategy: str = "auto",
    branching: str = "fsb",
    progress: bool = False,
) -> PropertyResult:
    """Decide a `jaxcert.vnnlib.Property` on a traced network.

    For each case (an input box and its unsafe region): one CROWN pass bounds every row of every
    disjunct and every output (whose magnitude sets the tolerance, see the module docstring); a
    disjunct with a row whose lower bound exceeds its threshold by the row's tolerance is empty.
    A PGD search over the box looks for a counterexample in the remaining disjuncts, and the
    disjuncts still open are then decided by MILPs. A counterexample must lie inside the unsafe
    region by the tolerance in the network's own arithmetic and in float64; a region reachable
    only within the tolerance is "unknown", with or without the search.

    Args:
      net: a traced network whose input has as many entries as the property's X and whose
        output as many as its Y (both in row-major order).
      prop: the parsed property (`jaxcert.vnnlib.read_vnnlib`).
      solver: "race" (SCIP and HiGHS at once on each MILP, the first decisive answer wins, as
        in `verify`), "scip" or "highs".
      time_limit: seconds for the whole property; checked between phases (a phase that took
        longer before than the time left is not started), the MILP solvers get the time left,
        and the answer is then "timeout". A compiled bound pass cannot be stopped once started.
      attack_steps: PGD steps of the search for a counterexample (0 skips it).
      seed: seed of the search's random starts.
      strategy: how the disjuncts the bounds and the search leave open are decided: "milp",
        "bab" (branch and bound: input splits for at most 16 inputs or a network with
        sigmoid/tanh, else activation splits), or "auto" (default): as in `verify`, today
        branch and bound. Without "milp", a network with sigmoid or tanh is decided by input
        splits.
      branching: how branch and bound's activation splits choose their neuron, "fsb"
        (default) or "babsr" (as in `verify`).
      progress: print branch and bound's progress to standard error.

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
    check_property_options(solver, time_limit, attack_steps, strategy)
    check_choice("branching", branching, BRANCHING)
    clock = Clock(time_limit)
    n_in, n_out = int(np.prod(net.input_shape)), int(np.prod(net.output_shape))
    for case in prop.cases:
        if case.lower.size != n_in:
            raise ValueError(f"the property has {case.lower.size} inputs, the network {n_in}")
        for C, _ in case.unsafe:
            if C.shape[1] != n_out:
                raise ValueError(f"the property has {C.shape[1]} outputs, the network {n_out}")
    domains = [0]  # counted by _branch as it goes, also when the time runs out
    try:
        result, counterexample = _decide(net, prop, solver, attack_steps, seed, clock, strategy,
                                         branching, progress, domains)  # fmt: skip
    except OutOfTime:
        result, counterexample = "timeout", None
    return PropertyResult(result, counterexample, clock.seconds(), domains[0])


def _decide(net, prop, solver, attack_steps, seed, clock, strategy, branching, progress,
            domains):  # fmt: skip
    """(result, counterexample) of `verify_property`; raises OutOfTime."""
    dtype = net.graph.output_var.dtype
    n_out = int(np.prod(net.output_shape))
    took_bounds, took_search = 0.0, None  # the last measured duration of each phase
    milps = []  # (scaled gap left by CROWN, the case's MILP, C, d, tol)
    searches = []  # (scaled gap, outer box, inner box, bounds, C, d, tol) for branch and bound
    smooth = bool(smooth_activations(net))  # no MILP, and no activation splits
    status = "unsat"
    for number, (lower, upper, unsafe) in enumerate(prop.cases):
        clock.check(took_bounds)  # e.g. a property split into very many boxes
        started = time.perf_counter()
        shape = (1, *net.input_shape)
        box, inner = (
            Box(*(jnp.asarray(b.reshape(shape)) for b in rounded_box(lower, upper, np.float32,
                                                                      outward=outward)))
            for outward in (True, False)
        )  # fmt: skip
        rows = np.concatenate([C for C, _ in unsafe])
        relu_bounds = intermediate_bounds(net, box)
        clock.check()
        C_all = np.concatenate([rows, np.eye(n_out)])[None]  # the disjuncts' rows, then each output
        bounds = crown(net, box, jnp.asarray(C_all, dtype), intermediate=relu_bounds)
        low, high = (np.asarray(b[0], np.float64) for b in bounds)
        magnitude = np.maximum(np.abs(low[len(rows) :]), np.abs(high[len(rows) :]))
        took_bounds = time.perf_counter() - started
        ends = np.cumsum([len(C) for C, _ in unsafe])
        disjuncts = []
        for (C, d), end in zip(unsafe, ends):
            tol = tolerance(C, d, magnitude, dtype)
            gap = np.max((low[end - len(C) : end] - d) / tol)
            if not gap > 1:  # no row clears its threshold by its tolerance
                disjuncts.append((gap, C, d, tol))
        if not disjuncts:
            continue
        if attack_steps and clock.fits(took_bounds if took_search is None else took_search):
            started = time.perf_counter()
            key = jax.random.key(seed + number)
            found = _search(net, inner, [m[1:] for m in disjuncts], attack_steps, key)
            took_search = time.perf_counter() - started
            if found is not None:
                return "sat", found
        how = "bab" if strategy == "auto" else strategy
        if how == "milp" and smooth:
            status = "unknown"
            continue
        if how == "bab":
            searches += [(gap, box, inner, relu_bounds, C, d, tol) for gap, C, d, tol in disjuncts]
            continue
        milp = _CaseMILP(net, box, inner, relu_bounds)
        milps += [(gap, milp, C, d, tol) for gap, C, d, tol in disjuncts]
    for _, box, inner, relu_bounds, C, d, tol in sorted(searches, key=lambda m: m[0]):
        found = _branch(net, box, inner, relu_bounds, C, d, tol, clock, branching, progress,
                        domains, jax.random.key(seed))  # fmt: skip
        if isinstance(found, tuple):
            return "sat", found
        if found == "unknown":
            status = "unknown"
    # The disjuncts furthest from a proof first, as they are likelier to hold a counterexample;
    # each MILP may use all the time left (solvers overrun short limits, so no shares).
    race = solver == "race" and milps  # the race's workers start only when a MILP is needed
    with Race() if race else contextlib.nullcontext(solver) as engine:
        for _, milp, C, d, tol in sorted(milps, key=lambda m: m[0]):
            found = milp.decide(C, d, tol, engine, clock)
            if isinstance(found, tuple):
                return "sat", found
            if found == "unknown":
                status = "unknown"
    return status, None


def _branch(net, box, inner, relu_bounds, C, d, tol, clock, branching, progress, domains, key):
    """Branch and bound on one disjunct: a counterexample (x, y), "empty" or "unknown"; raises
    OutOfTime. Activation splits start from the case's CROWN bounds; domains[0] counts the
    domains bounded. A candidate point of branch and bound that reaches the region by the
    tolerance without being a counterexample (which would end the search as "unknown") gets a
    short PGD search around it first (the first LOCAL_SEARCHES such points), in a box of 1/16
    of the case's widths."""
    example = Box(box.lower[0], box.upper[0])
    lower, upper = (np.asarray(v, np.float64) for v in (inner.lower[0], inner.upper[0]))
    searches = [LOCAL_SEARCHES]

    def confirm(x):
        x = np.clip(np.asarray(x, np.float64).ravel(), lower, upper)
        found = _confirmed(net, x, [(C, d, tol)])
        if found is None and searches[0] > 0:
            searches[0] -= 1
            reach = (upper - lower) / 32
            near = rounded_box(np.maximum(lower, x - reach), np.minimum(upper, x + reach),
                               np.float32, outward=False)  # fmt: skip
            local = Box(*(jnp.asarray(v.reshape(inner.lower.shape)) for v in near))
            found = clock.run(_search, net, local, [(C, d, tol)], LOCAL_STEPS, key)
        return found

    result = branch_and_bound(
        net, example, C, d, tol, clock=clock, confirm=confirm, split=choose_split(net, box),
        relu_bounds=[Interval(b.lower[0], b.upper[0]) for b in relu_bounds], branching=branching,
        progress=progress,
    )  # fmt: skip
    domains[0] += result.domains
    if result.status == "timeout":
        raise OutOfTime
    if result.status == "falsified":
        return result.counterexample
    return "empty" if result.status == "verified" else "unknown"


def _confirmed(net, x, disjuncts):
    """(x, y) with y = net(x) when y lies in some disjunct (C, d, tol) by a tolerance,
    C @ y <= d - tol', in the network's arithmetic and in float64; else None. The tolerance
    tol' is that of the point's own outputs, `tolerance(C, d, |y|)`, where it is below the
    disjunct's (whose magnitude bounds the outputs over the whole box, often loosely): what
    makes a point's outputs trustworthy is the rounding of its own computation."""
    x = np.asarray(x, np.float32).reshape(1, *net.input_shape)
    y = np.asarray(net(jnp.asarray(x)))[0].ravel()
    y64 = forward_float64(net, x)
    magnitude = np.maximum(np.abs(y.astype(np.float64)), np.abs(y64))
    for C, d, tol in disjuncts:
        tol = np.minimum(tol, tolerance(C, d, magnitude, y.dtype))
        if all(np.all(C @ v <= d - tol) for v in (y.astype(np.float64), y64)):
            return x.ravel(), y
    return None


def _search(net, box, disjuncts, steps, key, starts=16):
    """A counterexample found by PGD on the box, or None.

    The objective is min over disjuncts of max over rows of (c . f(x) - d) / tol + 1, which is
    <= 0 exactly where the point lies in a disjunct by its tolerance; `attacks.pgd` minimises it
    through two logits whose margin is its negative, from `starts` random points of the box.
    """
    size = max(len(C) for C, _, _ in disjuncts)
    C = np.zeros((len(disjuncts), size, disjuncts[0][0].shape[1]), np.float32)
    d = np.full((len(disjuncts), size), np.finfo(np.float32).max, np.float32)  # pads never bind
    tol = np.ones((len(disjuncts), size), np.float32)
    for j, (Cj, dj, tj) in enumerate(disjuncts):
        C[j, : len(Cj)], d[j, : len(dj)], tol[j, : len(tj)] = Cj, dj, tj
    center = (box.lower + box.upper) / 2
    radius = float(jnp.max(box.upper - box.lower)) / 2
    x = jnp.repeat(center, starts, axis=0)
    z, margin = pgd(
        _unsafe_logits,
        (net, jnp.asarray(C), jnp.asarray(d), jnp.asarray(tol)),
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
    return _confirmed(net, z[best], disjuncts)


def _unsafe_logits(params, z):
    """Logits (g, 0) with g = min_j max_k ((C_jk . f(z) - d_jk) / tol_jk + 1): the margin -g is
    > 0 when z lies in a disjunct by its tolerance."""
    net, C, d, tol = params
    y = net(z).reshape(z.shape[0], -1)
    gap = jnp.max((jnp.einsum("jkn,bn->bjk", C, y) - d) / tol + 1, axis=2)
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

    def decide(self, C, d, tol, solver, clock):
        """A counterexample (x, y) of the disjunct C @ Y <= d, "empty" (unreachable by the
        tolerance) or "unknown"; raises OutOfTime.

        First the decision of C @ Y <= d + tol (infeasible: empty); when its solution is no
        counterexample, the minimum of t with C @ Y - d <= t tol, whose best point is checked.
        """
        model, _, outputs, _ = self._model(clock)
        terms = [mathopt.fast_sum(c * y for c, y in zip(row, outputs) if c != 0) for row in C]
        limits = [term <= float(b) for term, b in zip(terms, d + tol)]
        result = self._solve(model, limits, solver, clock, "decide")
        if result.termination.reason == mathopt.TerminationReason.INFEASIBLE:
            return "empty"
        found = self._checked(result, C, d, tol)
        if found is None and result.has_primal_feasible_solution():
            t = model.add_variable()  # free: the margin of the best point, in tolerances
            model.minimize(t)
            try:
                limits = [term - float(s) * t <= float(b) for term, s, b in zip(terms, tol, d)]
                result = self._solve(model, limits, solver, clock, "optimize")
            finally:
                model.objective.clear()
                model.delete_variable(t)
            found = self._checked(result, C, d, tol)
        if found is not None:
            return found
        if result.termination.limit == mathopt.Limit.TIME:
            raise OutOfTime
        return "unknown"

    def _model(self, clock):
        if self.built is None:
            bounds = _clocked(self.relu_bounds, clock)  # stops an abandoned build early
            self.built = clock.build(milp_model, self.net, self.outer, bounds)
        return self.built

    @staticmethod
    def _solve(model, constraints, solver, clock, search):
        """Solve the model with `constraints` added for this solve only, in the time left."""
        left = clock.left()
        if left <= 0:
            raise OutOfTime
        added = [model.add_linear_constraint(c) for c in constraints]
        try:
            if not isinstance(solver, Race):
                return solve_here(model, solver, left, None, search)
            result, _ = solver.solve(model, left, None, search)
            if result is None:  # no answer from either solver by the deadline
                raise OutOfTime
            return result
        finally:
            for constraint in added:
                model.delete_linear_constraint(constraint)

    def _checked(self, result, C, d, tol):
        """The solution moved into the inner box, if it is a counterexample; else None."""
        if not result.has_primal_feasible_solution():
            return None
        _, inputs, _, _ = self.built
        lower, upper = (np.asarray(v, np.float64).ravel() for v in self.inner.box())
        x = np.clip([result.variable_values(v) for v in inputs], lower, upper)
        return _confirmed(self.net, x, [(C, d, tol)])


def _clocked(relu_bounds, clock):
    """The bounds one by one, checking the clock before each: `milp_model` reads them ReLU by
    ReLU, so this stops a long build between layers."""
    for bound in relu_bounds:
        clock.check()
        yield bound
