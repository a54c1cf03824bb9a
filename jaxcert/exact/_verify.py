"""Complete verification of small ReLU networks by mixed-integer linear programming.

For each image and each class j that the bound methods leave unproved, the margin f_y - f_j is
minimised over the input set with every unstable ReLU encoded exactly by a binary variable
(Tjeng, Xiao, Tedrake 2019), first as the LP relaxation (a positive optimum settles j), then as
the MILP, from the class with the lowest LP optimum on. By default the MILP is a feasibility
question (is there an input with f_j >= f_y?) that stops at its first solution; infeasibility
proves f_y > f_j everywhere, as does a positive dual bound when margins are minimised. A
solution with a negative margin is re-run through the JAX model, in float32 and float64, and
reported as a counterexample only if the class really changes there.

Rounding: the MILP is solved in float64 with absolute feasibility tolerances, on ReLU bounds
computed in the network's float type, so an LP or MILP proves a class only when its bound clears
a threshold that grows with the size of the network's outputs over the set,

    tau = allowance(S, dtype) + MARGIN * (1 + S),   S = max_k |bound of f_k over the set|

(`jaxcert._rounding.allowance`: 512 machine epsilons of S, plus the solver's tolerance). A class
whose minimum margin lies within about tau of zero is answered "unknown", never "verified".

References:
  V. Tjeng, K. Xiao, R. Tedrake, "Evaluating Robustness of Neural Networks with Mixed Integer
  Programming", ICLR 2019.
"""

import contextlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from ortools.math_opt.python import mathopt

from .._rounding import allowance, rounded_box
from .._sets import Box, InputSet, L1Ball, LinfBall
from .._validate import check_choice, check_count
from ..attacks import pgd
from ..bounds import (
    Interval,
    check_inputs,
    crown,
    intermediate_bounds,
    lp_model,
    margins,
)
from ..graph import Network
from ._bab import BRANCHING, branch_and_bound, check_split
from ._clock import Clock, OutOfTime
from ._encoding import check_piecewise_linear, milp_model
from ._encoding import tighten as tighten_bounds
from ._float64 import forward_float64
from ._race import SOLVERS, Race, solve_here

MODES = ("decide", "minimum")
# "auto" is branch and bound: it was faster than the MILP or decided more at every unstable
# neuron count measured (0 to 175; benchmarks/bab.py and the soundness harness, README
# "Complete verification"), so the count does not enter the rule today.
STRATEGIES = ("auto", "bab", "milp")
# A candidate must change the class by more than this in the model itself; and the solvers'
# absolute tolerances (about 1e-6 to 1e-9) are covered by MARGIN * (1 + S) in the threshold.
MARGIN = 1e-6


class Verification(NamedTuple):
    """The answer for one image.

    Attributes:
      status: "verified" (no input in the set changes the class), "falsified" (the
        counterexample changes the class in the JAX model), "unconfirmed" (the solver's
        counterexample does not change the class when re-run: a tolerance artefact), or
        "unknown" (the time limit, or a margin too close to zero to call).
      margin_lower: a proven lower bound of min_z min_j f_y(z) - f_j(z) over the set.
      margin_upper: an upper bound of that minimum, from inputs in the set (inf if none).
      target: the class j of the smallest margin found, or -1.
      counterexample: an input in the set that the model misclassifies, or None.
      seconds: wall time for this image, including its share of the batch's bound and attack
        computations.
      binaries: number of binary variables (unstable ReLUs) in the MILP.
      domains: sub-domains bounded by branch and bound (0 without it).

    Both margins come from deterministic computations only, so that a run repeats them: the
    bound method, the LP relaxations (GLOP), the attack, and the MILP. A single MILP solver
    ("scip" or "highs") is deterministic and contributes its dual bound to `margin_lower`
    (minus the rounding threshold tau, see the module docstring) and the float64 model margin
    of each solution to `margin_upper`. In a race the winner, and with it the solution and the
    dual bound, varies between runs, so the MILP contributes only its decisions: a class it
    proves raises `margin_lower` to tau, a counterexample it finds lowers `margin_upper` to
    -MARGIN (the margin its confirmation established).
    """

    status: str
    margin_lower: float
    margin_upper: float
    target: int
    counterexample: np.ndarray | None
    seconds: float
    binaries: int
    domains: int = 0


def verify(net: Network, spec: InputSet, y: ArrayLike, *, solver: str = "race",
           time_limit: float = 60.0, bounds: str = "crown", threads: int | None = None,
           mode: str = "decide", attack_steps: int = 50, tighten: bool = False, seed: int = 0,
           strategy: str = "auto", split: str = "auto", branching: str = "fsb",
           progress: bool = False) -> list[Verification]:  # fmt: skip
    """Decide, image by image, whether any input in the set changes the network's class.

    Args:
      net: a traced network (`jaxcert.trace`) of modest size (its linear layers become dense
        constraint matrices).
      spec: `LinfBall`, `Box` or `L1Ball` over a batch of B inputs (intersected with the box).
      y: the class to keep, one per image (B,).
      solver: "race" (default): each MILP runs on SCIP and HiGHS at once, in two worker
        processes, and the first decisive answer wins (the other is stopped); or "scip" or
        "highs" alone, both shipped with OR-Tools. Chosen by measurement: HiGHS proves
        infeasibility (a verified class) up to 40x faster than SCIP on the adversarially trained
        digits MLP, SCIP finds counterexamples that HiGHS misses without the attack, and the
        race matched the better of the two on every row of `benchmarks/exact.py`. CP-SAT is
        refused: it restricts continuous variables to a grid, so its "infeasible" proves
        nothing here.
      time_limit: seconds per image (> 0), counting each image's share of the batch's bound
        and attack computations, compilation included: the bounds and the attack run within
        the batch's budget (a compiled computation cannot be interrupted, so at the deadline
        it is left to finish in the background, unused, and every image answers "unknown");
        every later phase (attack, LPs, tightening, each MILP, each batch of branch and bound)
        starts only while the image has time left, and the solvers get only the time left but
        a twentieth, kept to confirm a solution (a race kills its workers at that limit, having
        given them up to 0.5 s less); building the LP and MILP models (the first on a network
        compiles its layers' Jacobians) is left unfinished at the deadline like the bounds. An
        image stopped by its limit answers "unknown" (or "unconfirmed").
      bounds: "crown", "crown-ibp", "alpha-crown" or "ibp": proves classes before any LP and
        gives the ReLU bounds (tighter bounds mean fewer binaries and smaller big-M constants).
      threads: solver threads (SCIP, also in the race), or None for the solver's default.
      mode: "decide" (default) asks each MILP only whether some input brings f_j within 2 tau
        of f_y and stops at the first such input, so a falsified image costs one solution and a
        verified one an infeasibility proof; `margin_lower` is then a proof that the margin is
        positive, not its value. "minimum" minimises every open margin to optimality, so
        with a single solver `margin_lower`/`margin_upper` bracket the exact minimum margin
        (within 2 tau); a race reports only its decisions (see `Verification`).
      attack_steps: steps of a PGD attack (`jaxcert.attacks.pgd`, 4 restarts) run on the batch
        first (l_inf balls and boxes): an attack point that the model misclassifies (checked in
        float32 and float64) settles its image as "falsified" without any solver; 0 skips it.
      tighten: if the LPs leave a class open, first tighten the ReLU bounds of every layer
        after the first by the LP relaxation, layer by layer (Tjeng et al. 2019), then rerun
        the LPs; the MILP gets the tighter bounds (fewer binaries, smaller big-M constants).
        Off by default: after CROWN it removed under 2% of the binaries on the digits MLPs.
        Skipped when its LPs (two per unstable ReLU, timed by the LPs before) would not fit in
        the time left.
      seed: seed of the attack's random restarts.
      strategy: how the classes the bounds leave open are decided: "milp" (the LPs, then the
        MILPs above), "bab" (branch and bound, `jaxcert.exact` module `_bab`: input splits for
        box-shaped sets of at most 16 inputs or networks with sigmoid/tanh, else beta-CROWN
        activation splits), or "auto" (default): today branch and bound, which was faster than
        the MILP or decided more at every unstable-neuron count measured (`benchmarks/bab.py`,
        the README's "Complete verification").
      split: branch and bound's splits: "auto" (`choose_split`, above), "relu" (activation
        splits; piecewise-linear networks) or "input" (input splits; an LinfBall or a Box).
      branching: how activation splits choose their neuron: "fsb" (default; filtered smart
        branching: of the 8 best-scored neurons of the later activations and the 16 of the
        first, the one whose children bound best in a pass without gradient steps) or "babsr"
        (the largest BaBSR-style score). On the MNIST-sized MLP of `benchmarks/bab.py`, "fsb"
        decided img1 at eps 0.008 in 38-45 s (BaBSR: open at 60 s, worst bound -0.016) and
        img0 at eps 0.006 with 8,512 domains against 22,220; it pays a compilation of its
        estimates (in the background, while the root is bounded), seconds on easy questions.
      progress: print branch and bound's progress (domains per second, open domains, worst
        bound) to standard error.

    Returns:
      A list of B `Verification`s. With branch and bound, `binaries` is 0.

    References:
      Tjeng, Xiao, Tedrake, ICLR 2019.
    """
    check_inputs(net, spec)
    check_choice("strategy", strategy, STRATEGIES)
    if not isinstance(spec, LinfBall | Box | L1Ball):
        raise ValueError(f"verify needs an LinfBall, Box or L1Ball, got {type(spec).__name__}")
    split = check_split(net, spec, split)
    check_choice("branching", branching, BRANCHING)
    if strategy == "milp" or split == "relu":
        check_piecewise_linear(net)
    if str(solver).lower().replace("-", "").replace("_", "") == "cpsat":
        raise ValueError(
            "solver 'cp-sat' is refused: it restricts real-valued variables to a finite grid, "
            "so its answers prove nothing for a ReLU network; use 'scip' or 'highs'"
        )
    check_choice("solver", solver, (*SOLVERS, "race"))
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    check_choice("mode", mode, MODES)
    if threads is not None and solver == "highs":
        raise ValueError("threads is supported with solver='scip' (and SCIP in 'race') only")
    check_count("attack_steps", attack_steps, minimum=0)
    if not isinstance(tighten, bool):
        raise ValueError(f"tighten must be True or False, got {tighten!r}")
    batch = spec.batch_size
    clock = Clock(time_limit * batch)  # the batch's budget
    y = np.broadcast_to(np.asarray(y), (batch,))

    def bound_and_attack():
        relu_bounds = intermediate_bounds(net, spec, method="ibp" if bounds == "ibp" else "crown")
        if bounds == "crown":  # reuse the intermediate bounds the MILPs need
            proved = np.asarray(margins(net, spec, y, method="crown", intermediate=relu_bounds))
        else:
            proved = np.asarray(margins(net, spec, y, method=bounds))
        open_ = ~np.all(proved > 0, axis=1)
        scale, attacked = None, None
        if open_.any():  # the size of the outputs over each set, for the rounding threshold
            out = crown(net, spec, intermediate=relu_bounds)
            scale = np.max(np.maximum(np.abs(out.lower), np.abs(out.upper)), axis=1)
            # compile the checks of solutions now, so that no image's budget pays for it
            first = jax.tree.map(lambda a: a[0], spec)
            _confirm(net, first, np.asarray(first.box()[0]), int(y[0]))
        if attack_steps and open_.any() and clock.left() > 0:
            attacked = _attack(net, spec, y, attack_steps, seed)
        return relu_bounds, proved, open_, scale, attacked

    try:  # compiled work cannot be stopped: at the deadline it is left to finish unused
        relu_bounds, proved, open_, scale, attacked = clock.run(bound_and_attack)
    except OutOfTime:
        seconds = clock.seconds() / batch
        return [Verification("unknown", -np.inf, np.inf, -1, None, seconds, 0)] * batch
    shared = clock.seconds() / batch  # bounds and attack, per image
    dtype = net.graph.input_var.dtype
    results = []
    with Race() if solver == "race" else contextlib.nullcontext(solver) as engine:
        for b in range(batch):
            example = jax.tree.map(lambda a, b=b: a[b], spec)
            attack = None  # a point the attack misclassifies (in float32), and its margin
            if attacked is not None and attacked[1][b] > 0:
                attack = attacked[0][b], float(-attacked[1][b])
            threshold = _threshold(scale[b], dtype) if open_[b] else None
            example_bounds = [Interval(r.lower[b], r.upper[b]) for r in relu_bounds]
            result = _verify_one(
                net, example, example_bounds, int(y[b]), proved[b], attack, threshold,
                time_limit - shared, engine, threads, mode, tighten, strategy, split, branching,
                progress,
            )  # fmt: skip
            results.append(result._replace(seconds=result.seconds + shared))
    return results


def _threshold(scale, dtype):
    """How far an LP or MILP bound of a margin must clear zero to prove it (module docstring)."""
    scale = float(scale)
    return float(allowance(scale, dtype)) + MARGIN * (1 + scale)


def _network(net, x):
    return net(x)


def _attack(net, spec, y, steps, seed):
    """PGD over the set's box (l_inf balls and boxes), as NumPy (points, margin losses)."""
    if not isinstance(spec, LinfBall | Box):
        return None
    lower, upper = jax.vmap(lambda s: s.box())(spec)
    center = (lower + upper) / 2
    radius = jnp.max((upper - lower).reshape(spec.batch_size, -1), axis=1) / 2
    z, loss = pgd(_network, net, center, jnp.asarray(y), jax.random.key(seed), radius,
                  steps=steps, restarts=4, lower=lower, upper=upper)  # fmt: skip
    return np.asarray(z), np.asarray(loss)


def margin_optima(net: Network, spec: InputSet, y: ArrayLike, *, solver: str = "scip",
                  time_limit: float = 60.0, bounds: str = "crown"
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The LP relaxation's and the MILP's minimum of f_y - f_j, for every class j.

    Both use the same intermediate bounds, so LP <= MILP, and the MILP optimum is the exact
    minimum margin: negative means an adversarial input exists for class j, positive that none
    does. Meant for inspection and teaching on small networks (every target is solved).

    Args:
      net: a traced network.
      spec: `LinfBall`, `Box` or `L1Ball` over a batch of B inputs.
      y: the true classes (B,).
      solver: "scip" or "highs" for the MILP.
      time_limit: seconds per MILP (a MILP stopped by it reports its proven lower bound).
      bounds: "crown" or "ibp" intermediate bounds.

    Returns:
      (lp, milp): float64 arrays (B, num_classes), NaN in the column of y.

    References:
      Tjeng, Xiao, Tedrake, ICLR 2019.
    """
    check_inputs(net, spec)
    check_choice("solver", solver, SOLVERS)
    relu_bounds = intermediate_bounds(net, spec, method="ibp" if bounds == "ibp" else "crown")
    y = np.asarray(y)
    num_classes = int(np.prod(net.output_shape))
    lp = np.full((spec.batch_size, num_classes), np.nan)
    milp = np.full_like(lp, np.nan)
    for b in range(spec.batch_size):
        example = jax.tree.map(lambda a, b=b: a[b], spec)
        example_bounds = [Interval(r.lower[b], r.upper[b]) for r in relu_bounds]
        relaxed, lp_vars = lp_model(net, example, example_bounds)
        relaxed_out = lp_vars[net.graph.output_var]
        model, _, outputs, _ = milp_model(net, example, example_bounds)
        for j in range(num_classes):
            if j == y[b]:
                continue
            lp[b, j] = _solve(relaxed, relaxed_out, y[b], j, "glop", None, None).objective_value()
            result = _solve(model, outputs, y[b], j, solver, time_limit, None)
            optimal = result.termination.reason == mathopt.TerminationReason.OPTIMAL
            milp[b, j] = (
                result.objective_value()
                if optimal
                else result.termination.objective_bounds.dual_bound
            )
    return lp, milp


def _verify_one(
    net, example, relu_bounds, label, proved, attack, threshold, budget, engine, threads, mode,
    tighten, strategy, split, branching, progress,
):  # fmt: skip
    """One image: the attack's point confirmed, then branch and bound or LPs and MILPs, within
    `budget` seconds. `threshold` is tau (None if the bounds proved every class). Building the
    LP and MILP models (eager JAX calls, compiled on first use) runs under the clock too."""
    clock = Clock(budget)
    left = clock.left
    raced = isinstance(engine, Race)
    # best[j]: a proven lower bound of min f_label - f_j, improved by the LP, then the MILP.
    best = {j: float(proved[j]) for j in range(len(proved)) if j != label}
    targets = [j for j in best if not best[j] > 0]
    upper, target, unconfirmed, binaries, domains = np.inf, -1, False, 0, 0

    def answer(status, counterexample=None):
        return Verification(status, min(best.values()), upper, target, counterexample,
                            clock.seconds(), binaries, domains)  # fmt: skip

    def stopped():  # by the time limit
        return answer("unconfirmed" if unconfirmed else "unknown")

    if not targets:
        return answer("verified")
    if left() <= 0:
        return stopped()
    if attack is not None:
        counterexample = _confirm(net, example, attack[0], label)
        if counterexample is not None:
            upper = attack[1]
            target = int(jnp.argmax(net(jnp.asarray(counterexample[None]))[0]))
            return answer("falsified", counterexample)
    if strategy in ("auto", "bab"):
        num_classes = len(proved)
        for j in sorted(targets, key=best.get):
            C = np.zeros((1, num_classes), np.float32)
            C[0, label], C[0, j] = 1, -1
            result = branch_and_bound(
                net, example, C, np.zeros(1), np.zeros(1), clock=clock,
                confirm=lambda x: _confirm(net, example, x, label),
                split=split, relu_bounds=relu_bounds,
                leaf_tolerance=np.full(1, threshold), branching=branching, progress=progress,
            )  # fmt: skip
            domains += result.domains
            if result.status == "falsified":
                upper, target = -MARGIN, j
                return answer("falsified", result.counterexample)
            if result.status == "timeout":
                return stopped()
            if result.status == "verified":
                best[j] = max(best[j], result.lower)
        return answer("verified" if min(best.values()) > 0 else "unknown")
    def build(fn, *args):  # fn(*args) by the deadline, or None
        try:
            return clock.build(fn, *args)
        except OutOfTime:
            return None

    # Every LP first (they are cheap), again after tightening the ReLU bounds by LP if some
    # class is still open and the tightening fits; the MILPs then go from the most promising
    # target on.
    lp_optimum, tightened = {}, False
    while True:
        built = build(lp_model, net, example, relu_bounds)
        if built is None:
            return stopped()
        relaxation, lp_vars = built
        relaxed_out = lp_vars[net.graph.output_var]
        lps_began = time.perf_counter()
        for j in targets:
            if left() <= 0:
                return stopped()
            result = _solve(relaxation, relaxed_out, label, j, "glop", left(), None)
            if result.termination.reason != _OPTIMAL:  # the LP's time limit
                return stopped()
            lp_optimum[j] = result.objective_value()
            best[j] = max(best[j], lp_optimum[j] - threshold)
        per_lp = (time.perf_counter() - lps_began) / len(targets)
        targets = sorted((j for j in targets if not best[j] > 0), key=lp_optimum.get)
        if not targets:
            return answer("verified")
        unstable = sum(int(np.sum((b.lower < 0) & (b.upper > 0))) for b in relu_bounds[1:])
        if tightened or not tighten or 2 * unstable * per_lp > left():
            break
        relu_bounds, tightened = build(tighten_bounds, net, example, relu_bounds), True
        if relu_bounds is None:
            return stopped()
    built = build(milp_model, net, example, relu_bounds)
    if built is None:
        return stopped()
    model, inputs, outputs, binaries = built
    for j in targets:
        for search in ("decide", "minimum") if mode == "decide" else ("minimum",):
            if left() <= 0:
                return stopped()
            # the solver gets the time left but a twentieth, kept to confirm its solution
            limit = 0.95 * left()
            result = _solve(model, outputs, label, j, engine, limit, threads, search, threshold)
            if result is None:  # no answer by the race's deadline
                return stopped()
            reason = result.termination.reason
            if reason == mathopt.TerminationReason.INFEASIBLE:  # no input has margin <= 2 tau
                best[j] = max(best[j], threshold)
                break
            if search == "minimum":
                dual = result.termination.objective_bounds.dual_bound
                if dual > 2 * threshold:
                    best[j] = max(best[j], threshold if raced else dual - threshold)
            if result.has_primal_feasible_solution():
                if left() <= 0:  # no time to evaluate the solution in the model
                    return stopped()
                x = np.array([result.variable_values(v) for v in inputs]).reshape(net.input_shape)
                if not raced:
                    reached = _margin(net, example, x, label)
                    if reached < upper:
                        upper, target = reached, j
                if result.objective_value() < 0:
                    counterexample = _confirm(net, example, x, label)
                    if counterexample is not None:
                        upper, target = min(upper, -MARGIN), j
                        return answer("falsified", counterexample)
                    unconfirmed = True
            if search == "minimum" and reason != _OPTIMAL:
                return stopped()
            # a "decide" solution that is no counterexample: minimise the margin to settle j
    if min(best.values()) > 0:
        return answer("verified")
    return answer("unconfirmed" if unconfirmed else "unknown")


_OPTIMAL = mathopt.TerminationReason.OPTIMAL
_FAILED = {
    mathopt.TerminationReason.UNBOUNDED,
    mathopt.TerminationReason.NUMERICAL_ERROR,
    mathopt.TerminationReason.OTHER_ERROR,
    mathopt.TerminationReason.INFEASIBLE_OR_UNBOUNDED,
}


def _solve(model, outputs, label, j, solver, time_limit, threads, search="minimum", threshold=0):
    """Minimise f_label - f_j over the model with "glop" (the LP), a MILP solver's name, or a
    `Race` of both MILP solvers.

    search="minimum" solves to optimality (or until the time limit). search="decide" asks for
    any input with f_label - f_j <= 2 * threshold and stops at the first one found; the result
    is INFEASIBLE when there is none. Returns None when a race had no answer by its deadline.
    """
    margin = outputs[label] - outputs[j]
    model.objective.set_to_expression(margin)
    model.objective.is_maximize = False
    unsafe = model.add_linear_constraint(margin <= 2 * threshold) if search == "decide" else None
    try:
        if isinstance(solver, Race):
            result, _ = solver.solve(model, time_limit, threads, search)
        else:
            result = solve_here(model, solver, time_limit, threads, search)
    finally:
        if unsafe is not None:
            model.delete_linear_constraint(unsafe)
    if result is None:
        return None
    reason = result.termination.reason
    if reason in _FAILED or (reason == mathopt.TerminationReason.INFEASIBLE and search != "decide"):
        raise RuntimeError(f"the solver failed: {reason.name} ({result.termination.detail})")
    return result


def _inside(example, x, dtype):
    """x in the set as `dtype`: clipped into the set's box (computed in float64, rounded
    inwards), and for an l1 ball moved towards the centre until its float64 distance is at most
    eps (a solver's point on the sphere leaves it when rounded); None if it stays outside."""
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), example)
        exact = [np.asarray(v) for v in wide.box()]
    box = rounded_box(*exact, dtype, outward=False)
    x = np.clip(np.asarray(x, dtype), *box)
    if not isinstance(example, L1Ball):
        return x
    center, eps = np.asarray(example.x, np.float64), float(example.eps)
    unit = float(np.finfo(dtype).eps) * x.size
    for k in range(20):
        delta = x.astype(np.float64) - center
        if np.abs(delta).sum() <= eps:
            return x
        x = np.clip((center + delta * (1 - unit * 2**k)).astype(dtype), *box)
    return None


def _margin(net, example, x, label):
    """The margin min_j f_label - f_j of the model in float64 at x clipped into the set (inf
    if x is outside the set)."""
    x = _inside(example, x, net.graph.input_var.dtype)
    if x is None:
        return np.inf
    logits = forward_float64(net, x)
    return float(logits[label] - np.delete(logits, label).max())


def _confirm(net, example, x, label):
    """x clipped into the set, if the JAX model misclassifies it in float32 and float64."""
    x = _inside(example, x, net.graph.input_var.dtype)
    if x is None:
        return None
    logits32 = np.asarray(net(jnp.asarray(x[None])))[0]
    logits64 = forward_float64(net, x)
    for logits in (logits32, logits64):
        if not np.delete(logits, label).max() > logits[label] + MARGIN:
            return None
    return x
