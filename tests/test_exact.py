"""Complete verification against brute-force enumeration of activation patterns."""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxcert as jc
from jaxcert.exact import _verify


def random_mlp(seed, sizes=(3, 5, 4, 3)):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(a, b)), rng.normal(size=b) * 0.5) for a, b in zip(sizes, sizes[1:])]


def mlp_apply(params, x):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def exact_min_margin(params, lower, upper, label, j):
    """min over the box of f_label - f_j, by one LP per activation pattern (numpy + SciPy)."""
    hidden = [w.shape[1] for w, _ in params[:-1]]
    best = np.inf
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        A, c = np.eye(len(lower)), np.zeros(len(lower))  # current layer = A x + c
        rows, rhs, start = [], [], 0
        for (w, b), width in zip(params[:-1], hidden):
            A, c = A @ w, c @ w + b
            s = np.array(pattern[start : start + width], float)
            start += width
            sign = np.where(s > 0, -1.0, 1.0)  # active: pre >= 0; inactive: pre <= 0
            rows.append(sign[:, None] * A.T)
            rhs.append(-sign * c)
            A, c = A * s, c * s
        w, b = params[-1]
        A, c = A @ w, c @ w + b
        objective = A[:, label] - A[:, j]
        res = scipy.optimize.linprog(
            objective,
            A_ub=np.vstack(rows),
            b_ub=np.concatenate(rhs),
            bounds=list(zip(lower, upper)),
            method="highs",
        )
        if res.status == 0:
            best = min(best, res.fun + c[label] - c[j])
    return best


@pytest.mark.slow  # the default run's MILP-against-enumeration check: tests/test_soundness.py
@pytest.mark.parametrize(
    "seed,mode,solver,attack,tighten",
    [
        (0, "decide", "race", 0, False),
        (1, "minimum", "race", 0, True),
        *((seed, "decide", "scip", 50, False) for seed in (0, 1, 2)),
        *((seed, "decide", "highs", 0, True) for seed in (0, 1, 2)),
        *((seed, "minimum", "scip", 0, False) for seed in (0, 1, 2)),
    ],
)
def test_verify_agrees_with_enumeration(seed, mode, solver, attack, tighten):
    params = random_mlp(seed)
    x = jnp.asarray(np.random.default_rng(10 + seed).uniform(0.2, 0.8, (5, 3)), jnp.float32)
    y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
    net = jc.trace(mlp_apply, params, x[:1])
    spec = jc.LinfBall(x, 0.15)
    results = jc.exact.verify(
        net, spec, y, time_limit=30, mode=mode, solver=solver, attack_steps=attack, tighten=tighten,
        strategy="milp",
    )
    lower, upper = (np.asarray(v, np.float64) for v in spec.box())
    for i, r in enumerate(results):
        exact = min(
            exact_min_margin(params, lower[i], upper[i], y[i], j) for j in range(3) if j != y[i]
        )
        if abs(exact) < 1e-4:
            continue  # too close to call in float32
        assert r.status == ("verified" if exact > 0 else "falsified"), (i, exact, r)
        assert r.margin_lower <= exact + 1e-5
        if r.status == "falsified":
            z = r.counterexample
            assert np.all(z >= lower[i] - 1e-7) and np.all(z <= upper[i] + 1e-7)
            assert int(jnp.argmax(mlp_apply(params, z[None]))) != y[i]


def test_lp_tightening_is_sound_and_never_looser():
    from jaxcert.bounds._interval import Interval
    from jaxcert.exact._encoding import tighten

    params = random_mlp(7, (3, 6, 6, 5, 3))
    x = jnp.asarray([[0.5, 0.3, 0.6]], jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    spec = jc.LinfBall(x, 0.3)
    crown = [Interval(b.lower[0], b.upper[0]) for b in jc.bounds.intermediate_bounds(net, spec)]
    example = jax.tree.map(lambda a: a[0], spec)
    tight = tighten(net, example, crown)
    lower, upper = (np.asarray(v[0], np.float64) for v in spec.box())
    points = np.random.default_rng(8).uniform(lower, upper, (20000, 3))
    h, narrower = points, 0
    for k, ((w, b), before, after) in enumerate(zip(params[:-1], crown, tight)):
        h = h @ w + b  # the pre-activations of ReLU layer k, at every sampled point
        assert np.all(after.lower >= np.asarray(before.lower, np.float64) - 1e-12)
        assert np.all(after.upper <= np.asarray(before.upper, np.float64) + 1e-12)
        assert np.all(h >= after.lower - 1e-5) and np.all(h <= after.upper + 1e-5), k
        narrower += np.sum(after.upper - after.lower < np.asarray(before.upper - before.lower))
        h = np.maximum(h, 0)
    assert narrower > 0  # the LP does tighten something on this network


@pytest.mark.slow
def test_milp_ge_lp_ge_crown_with_the_same_intermediate_bounds():
    params = random_mlp(5, (3, 6, 5, 3))
    x = jnp.asarray([[0.5, 0.4, 0.6]], jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    spec = jc.LinfBall(x, 0.2)
    label = int(jnp.argmax(mlp_apply(params, x)[0]))
    crown = np.asarray(jc.bounds.margins(net, spec, [label], method="crown"))[0]
    lp, milp = (v[0] for v in jc.exact.margin_optima(net, spec, [label]))
    lower, upper = (np.asarray(v[0], np.float64) for v in spec.box())
    for j in (j for j in range(3) if j != label):
        assert crown[j] <= lp[j] + 1e-5 <= milp[j] + 2e-5
        assert milp[j] == pytest.approx(exact_min_margin(params, lower, upper, label, j), abs=1e-4)
    assert np.isnan(lp[label]) and np.isnan(milp[label])


def test_robust_by_construction_is_verified():
    # margin f_0 - f_1 = 1.01 - |t| with t = x_0 - x_1 in [-1, 1]: at least 0.01 everywhere.
    def apply_fn(_, x):
        t = x[:, 0] - x[:, 1]
        return jnp.stack([1.01 - jax.nn.relu(t) - jax.nn.relu(-t), jnp.zeros_like(t)], axis=1)

    net = jc.trace(apply_fn, None, jnp.zeros((1, 2)))
    result = jc.exact.verify(net, jc.LinfBall(jnp.full((1, 2), 0.5), 0.5), [0], bounds="ibp")
    assert result[0].status == "verified" and result[0].margin_lower > 0


def test_cp_sat_and_bad_input_are_refused():
    params = random_mlp(0)
    x = jnp.full((1, 3), 0.5)
    net = jc.trace(mlp_apply, params, x)
    with pytest.raises(ValueError, match="grid"):
        jc.exact.verify(net, jc.LinfBall(x, 0.1), [0], solver="cp-sat")
    with pytest.raises(ValueError, match="L2Ball"):
        jc.exact.verify(net, jc.L2Ball(x, 0.1), [0])
    with pytest.raises(ValueError, match="time_limit"):
        jc.exact.verify(net, jc.LinfBall(x, 0.1), [0], time_limit=0)
    with pytest.raises(ValueError, match="mode"):
        jc.exact.verify(net, jc.LinfBall(x, 0.1), [0], mode="fast")
    with pytest.raises(ValueError, match="branching.*babsr.*fsb"):
        jc.exact.verify(net, jc.LinfBall(x, 0.1), [0], branching="kfsb")
    box = jc.Property([jc.Case(np.zeros(3), np.ones(3), [(np.array([[1.0, -1.0, 0.0]]), [0.0])])])
    with pytest.raises(ValueError, match="branching"):
        jc.exact.verify_property(net, box, branching="smart")


def test_minimal_distortion_of_a_known_boundary():
    # f_0 - f_1 = x_0 - x_1 + 0.1 near x = (0.5, 0.5): the l_inf distance to the boundary is
    # 0.1 / ||(1, -1)||_1 = 0.05.
    def apply_fn(_, x):
        t = jax.nn.relu(x[:, 0] - x[:, 1] + 1.1) - 1.0
        return jnp.stack([t, jnp.zeros_like(t)], axis=1)

    net = jc.trace(apply_fn, None, jnp.zeros((1, 2)))
    found = jc.exact.minimal_distortion(net, jnp.full((1, 2), 0.5), [0], max_eps=0.37, tol=1e-3)[0]
    assert found.exact and found.robust_eps <= 0.05 <= found.adversarial_eps
    assert found.adversarial_eps - found.robust_eps <= 1e-3
    z = found.counterexample
    assert np.abs(z - 0.5).max() <= found.adversarial_eps + 1e-6
    assert int(jnp.argmax(apply_fn(None, z[None])[0])) == 1


def test_the_time_limit_holds_when_the_milp_cannot_finish():
    # Minimising the margins of this network (78 binaries under IBP bounds) takes far longer
    # than the limit; the bounds cannot decide, the attack is off.
    params = random_mlp(0, (10, 40, 40, 10))
    x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (2, 10)), jnp.float32)
    y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
    net = jc.trace(mlp_apply, params, x[:1])
    spec = jc.LinfBall(x, 0.3)
    options = dict(bounds="ibp", attack_steps=0, mode="minimum", strategy="milp")
    # compiles the bounds and the layers of the LP model: the limit covers compiling, so on a
    # loaded CPU a call can stop before the MILP and leave compiling to the next
    for _ in range(5):
        if any(r.binaries for r in jc.exact.verify(net, spec, y, time_limit=3.0, **options)):
            break
    limit = 2.0
    began = time.perf_counter()
    results = jc.exact.verify(net, spec, y, time_limit=limit, **options)
    took = time.perf_counter() - began
    allowed = limit + max(1.0, 0.05 * limit)
    assert all(r.status != "verified" for r in results) and any(r.binaries for r in results)
    assert all(r.seconds <= allowed for r in results), [r.seconds for r in results]
    assert took <= len(results) * allowed, took
    began = time.perf_counter()
    results = jc.exact.verify(net, spec, y, time_limit=1e-6, **options)
    assert time.perf_counter() - began < 1.0
    assert [r.status for r in results] == ["unknown", "unknown"]
    assert all(r.margin_lower <= 0 for r in results)


def test_the_time_limit_holds_when_building_a_model_stalls(monkeypatch):
    # A cold build compiles each layer's Jacobian, which took 9 s on a loaded CPU: the build
    # runs under the image's clock and is left unfinished at the deadline.
    params = random_mlp(0, (10, 40, 40, 10))
    x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (1, 10)), jnp.float32)
    y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
    net = jc.trace(mlp_apply, params, x)
    spec = jc.LinfBall(x, 0.3)
    options = dict(bounds="ibp", attack_steps=0, strategy="milp")
    jc.exact.verify(net, spec, y, time_limit=5.0, **options)  # compiles the bounds
    for stalled in ("lp_model", "milp_model"):
        real = getattr(_verify, stalled)

        def slow(*args, real=real):
            time.sleep(3.0)
            return real(*args)

        with monkeypatch.context() as patch:
            patch.setattr(_verify, stalled, slow)
            began = time.perf_counter()
            (result,) = jc.exact.verify(net, spec, y, time_limit=1.0, **options)
            took = time.perf_counter() - began
        assert result.status == "unknown" and result.binaries == 0, (stalled, result)
        assert result.seconds <= 2.0 and took <= 2.0, (stalled, result.seconds, took)


@pytest.mark.parametrize("delta", [1e-7, pytest.param(1e-6, marks=pytest.mark.slow)])
def test_a_near_zero_margin_at_a_large_output_scale_is_never_verified(delta):
    # Outputs of order 1e3 (weights x10 per layer), the last bias of the true class moved so
    # that the exact minimum margin (float64 enumeration) is -delta * 1e3. Bounds "ibp" and no
    # attack, so that the LP and MILP decide: before the threshold scaled with the outputs,
    # SCIP answered "verified" for both deltas in mode "decide".
    params = [(w * 10, b * 10 ** (i + 1)) for i, (w, b) in enumerate(random_mlp(0))]
    params = [(np.float64(np.float32(w)), np.float64(np.float32(b))) for w, b in params]
    x = jnp.asarray(np.random.default_rng(10).uniform(0.2, 0.8, (1, 3)), jnp.float32)
    y = int(jnp.argmax(mlp_apply(params, x), axis=1)[0])
    spec = jc.LinfBall(x, 0.15)
    lower, upper = (np.asarray(v[0], np.float64) for v in spec.box())
    minimum = min(exact_min_margin(params, lower, upper, y, j) for j in range(3) if j != y)
    w, b = params[-1]
    shifted = np.float64(np.float32(b[y] - minimum - delta * 1e3))
    minimum += shifted - b[y]  # every margin f_y - f_j moves with the bias of class y
    params[-1] = (w, np.where(np.arange(3) == y, shifted, b))
    assert -2e3 * delta < minimum < 0
    net = jc.trace(mlp_apply, [(jnp.float32(w), jnp.float32(b)) for w, b in params], x)
    for mode in ("decide", "minimum"):
        for solver in ("scip", "highs"):
            r = jc.exact.verify(
                net, spec, [y], solver=solver, bounds="ibp", attack_steps=0, mode=mode,
                time_limit=10, strategy="milp",
            )[0]  # fmt: skip
            assert r.status != "verified" and r.margin_lower <= minimum, (mode, solver, r)
            if r.status == "falsified":  # checked by a float64 NumPy forward pass
                h = np.asarray(r.counterexample, np.float64)
                for k, (w, b) in enumerate(params):
                    h = h @ w + b if k == len(params) - 1 else np.maximum(h @ w + b, 0)
                assert np.argmax(h) != y


# The MILP's counterexample, and the attack's.
@pytest.mark.parametrize("attack_steps", [0, pytest.param(10, marks=pytest.mark.slow)])
def test_counterexamples_lie_in_the_exact_set_not_in_its_rounded_box(attack_steps):
    """Where x - eps rounded to float32 lies below the exact x - eps, a counterexample on the
    set's lower face must be rounded inwards (a seed of the soundness harness found one 1 ulp
    outside the set)."""

    def apply_fn(c, z):  # misclassified exactly where z0 < c, with c just inside the set
        return jnp.stack([z[:, 0] - c, jnp.zeros_like(z[:, 0])], axis=1)

    rng = np.random.default_rng(0)
    cases = 0
    while cases < 3:
        x = rng.uniform(0.3, 0.7, (1, 2)).astype(np.float32)
        eps = np.float32(rng.uniform(0.01, 0.1))
        lower = np.float64(x[0, 0]) - np.float64(eps)  # the exact lower face
        if np.float64(np.float32(lower)) >= lower:
            continue  # rounding to nearest already lands inside
        cases += 1
        c = np.float32(lower + 1e-4)
        net = jc.trace(apply_fn, c, jnp.asarray(x))
        (r,) = jc.exact.verify(net, jc.LinfBall(x, eps), [0], attack_steps=attack_steps)
        assert r.status == "falsified"
        z = np.asarray(r.counterexample, np.float64).reshape(-1)
        assert lower <= z[0] < np.float64(c), (z[0], lower)
        assert np.all(np.abs(z - x[0]) <= np.float64(eps))
