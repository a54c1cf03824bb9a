"""`jaxcert.exact.verify_property`: one decision rule near the unsafe region's boundary, and a
time limit that holds.

The oracle for the near-boundary properties is the exact minimum of a network output over the
box, in float64: each ReLU activation pattern of a small network is a linear program (SciPy).
"""

import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

import jaxcert as jc
from jaxcert.bounds import intermediate_bounds
from jaxcert.exact import verify_property
from jaxcert.exact._clock import Clock, OutOfTime
from jaxcert.exact._float64 import forward_float64 as _forward64
from jaxcert.exact._property import _CaseMILP, _confirmed, tolerance
from jaxcert.graph import Network
from jaxcert.vnnlib import Case, Property


def _big_output_net(seed, width=6, stable=False):
    """A 2-width-2 ReLU network whose outputs are about 1e3 (float32 weights); with `stable`,
    every ReLU is active on [-1, 1]^2, so that CROWN is exact but for its rounding."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(2, width)).astype(np.float32)
    b1 = rng.normal(size=width).astype(np.float32) * 0.5 + (5 if stable else 0)
    w2 = (rng.normal(size=(width, 2)) * 3).astype(np.float32)
    b2 = np.array([1000.0, 1100.0], np.float32) + rng.normal(size=2).astype(np.float32)
    params = (w1, b1, w2, b2)
    return Network(_graph(width), params), params


@functools.cache
def _graph(width):
    """One traced graph per width, shared by the networks (so that the bound passes and the
    search are compiled once)."""

    def apply_fn(p, x):
        return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]

    params = (np.zeros((2, width)), np.zeros(width), np.zeros((width, 2)), np.zeros(2))
    params = tuple(p.astype(np.float32) for p in params)
    return jc.trace(apply_fn, params, np.zeros((1, 2), np.float32)).graph


def _forward(params, x):
    w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def _exact_min(params, c, lower, upper):
    """min of c . f(x) over the box, in float64: one LP per activation pattern."""
    w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
    best = np.inf
    for pattern in itertools.product((0.0, 1.0), repeat=w1.shape[1]):
        on = np.array(pattern)
        sign = 1 - 2 * on  # active: w1 x + b1 >= 0, inactive: <= 0
        objective = (w1 * on) @ (w2 @ c)
        solved = linprog(objective, A_ub=(w1 * sign).T, b_ub=-sign * b1,
                         bounds=list(zip(lower, upper)), method="highs")  # fmt: skip
        if solved.status == 0:
            best = min(best, solved.fun + (b1 * on) @ (w2 @ c) + b2 @ c)
    return best


def _property(lower, upper, c, d):
    return Property([Case(np.asarray(lower, np.float64), np.asarray(upper, np.float64),
                          [(np.asarray(c, np.float64)[None], np.array([d]))])])  # fmt: skip


def test_large_outputs_near_the_boundary_are_never_unsat_and_do_not_depend_on_the_search():
    """Outputs about 1e3: an unsafe region c . Y <= d reachable in float64 by a little (less than
    float32 can resolve, up to a few hundredths) is "unknown" with and without the search (it
    was "unsat" for 12 of 54 such properties, and the search changed 6 answers); far from the
    boundary the answers are exact."""
    answers = []
    for seed, radius, stable in [(0, 0.05, False), (2, 0.6, False), (5, 0.3, True)]:
        net, params = _big_output_net(seed, stable=stable)
        centre = np.random.default_rng(seed).uniform(-0.5, 0.5, 2)
        lower, upper = centre - radius, centre + radius
        for c in ([1.0, -1.0], [0.0, -1.0]):
            c = np.array(c)
            lowest = _exact_min(params, c, lower, upper)
            for shift in (1e-6, 1e-5, 1e-4, 1e-2, 1.0, -1.0):  # d - min c . f
                prop = _property(lower, upper, c, lowest + shift)
                results = [
                    verify_property(net, prop, solver="highs", attack_steps=steps, time_limit=60,
                                    strategy="milp")
                    for steps in (0, 30)
                ]
                for r in results:
                    if r.result == "sat":  # the witness is real, in float64 and by a margin
                        x, y = r.counterexample
                        assert np.all((x >= lower) & (x <= upper))
                        assert c @ _forward(params, x.astype(np.float64)) <= lowest + shift
                        np.testing.assert_allclose(y, _forward(params, x), rtol=1e-6)
                want = {1.0: "sat", -1.0: "unsat"}.get(shift, "unknown")
                answers.append((seed, tuple(c), shift, [r.result for r in results], want))
    wrong = [a for a in answers if a[3] != [a[4]] * 2]
    assert not wrong, wrong


def test_the_tolerance_scales_with_the_outputs_and_the_threshold():
    C, d = np.array([[1.0, -1.0], [0.0, 2.0]]), np.array([0.5, -3000.0])
    tol = tolerance(C, d, np.array([1000.0, 10.0]), np.float32)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(tol, 512 * eps * np.array([1010.5, 3020.0]) + 1e-6, rtol=1e-6)
    assert tolerance(C, d, np.array([1000.0, 10.0]), np.float64)[0] < 1e-5


def test_a_counterexample_needs_only_the_tolerance_of_its_own_outputs():
    """A disjunct's tolerance comes from a bound on the outputs over the whole box, often loose
    (here as if it were 0.5); a point whose outputs lie in the region by more than their own
    rounding allowance is a counterexample, one within it is not."""
    net, params = _big_output_net(1)
    x = np.array([0.3, -0.2], np.float32)
    y0 = float(_forward(params, x.astype(np.float64))[0])  # about 1e3: own tolerance ~0.12
    own = tolerance(np.array([[1.0, 0.0]]), np.array([y0]), np.abs(_forward(params, x)),
                    np.float32)[0]  # fmt: skip
    assert 0.05 < own < 0.2
    for shift, found in [(-1.0, False), (0.5 * own, False), (2 * own, True), (0.6, True)]:
        disjunct = (np.array([[1.0, 0.0]]), np.array([y0 + shift]), np.array([0.5]))
        confirmed = _confirmed(net, x, [disjunct])
        assert (confirmed is not None) == found, shift
        if found:
            assert _forward(params, confirmed[0].astype(np.float64))[0] <= y0 + shift - own


def test_the_float64_forward_pass_matches_numpy():
    net, params = _big_output_net(0)
    x = np.array([[0.3, -0.2]], np.float32)
    y = _forward64(net, x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, _forward(params, x.astype(np.float64))[0], rtol=1e-13)


def test_a_tiny_time_limit_answers_timeout_at_once():
    net, params = _big_output_net(0)
    prop = _property([-1.0, -1.0], [1.0, 1.0], [1.0, 0.0], 1e4)
    began = time.perf_counter()
    result = verify_property(net, prop, time_limit=1e-6)
    assert result.result == "timeout" and result.counterexample is None
    assert time.perf_counter() - began < 1.0


def test_the_milp_build_stops_when_the_time_is_out():
    net, _ = _big_output_net(0)
    box = jc.Box(jnp.full((1, 2), -1.0), jnp.full((1, 2), 1.0))
    milp = _CaseMILP(net, box, box, intermediate_bounds(net, box))
    clock = Clock(60.0)
    clock.deadline = clock.began  # spent
    with pytest.raises(OutOfTime):
        milp.decide(np.eye(2)[:1], np.array([0.0]), np.array([1e-3]), "highs", clock)
    assert milp.built is None


def test_one_milp_model_serves_every_disjunct_of_a_box():
    # y0 = relu(x0 - x1), y1 = relu(x1 - x0), y2 = 0.5 on x in [0, 1] x [0, 0.25]
    w = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)

    def apply_fn(p, x):
        return jnp.concatenate([jax.nn.relu(x @ p[0]), jnp.full((x.shape[0], 1), 0.5)], axis=1)

    net = jc.trace(apply_fn, [w], np.zeros((1, 2), np.float32))
    box = jc.Box(jnp.zeros((1, 2)), jnp.array([[1.0, 0.25]]))
    milp = _CaseMILP(net, box, box, intermediate_bounds(net, box))
    tol = np.full(2, 1e-4)
    both = (np.array([[-1.0, 0, 0], [0, -1.0, 0]]), np.array([-0.2, -0.2]), tol)  # y0, y1 >= 0.2
    one = (np.array([[0, -1.0, 0]]), np.array([-0.21]), tol[:1])  # y1 >= 0.21: x0 <= 0.04
    clock = Clock(60.0)
    assert milp.decide(*both, "highs", clock) == "empty"
    x, y = milp.decide(*one, "highs", clock)  # the first disjunct's rows are gone again
    assert y[1] >= 0.21 and 0 <= x[0] <= 1 and 0 <= x[1] <= 0.25
    assert milp.decide(*both, "highs", clock) == "empty"
    near = (np.array([[0, -1.0, 0]]), np.array([-0.25 + 1e-5]), tol[:1])  # within tolerance
    assert milp.decide(*near, "highs", clock) == "unknown"
