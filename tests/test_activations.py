"""Activations beyond ReLU (the registry `jaxcert._activations`): their lines on a grid of
intervals, sampled soundness of every bound method on networks that mix them, the MILP against
enumeration of the pieces, and the refusal of smooth activations by the MILP."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampling import sample_set
from scipy.optimize import linprog

import jaxcert as jc
from jaxcert._activations import ACTIVATIONS

# Each activation as a function of v, in float64 NumPy (the oracle), and its constants.
ORACLES = {
    "relu": (lambda v, c: np.maximum(v, c), [0.0, 0.5, -1.0]),
    "min": (lambda v, c: np.minimum(v, c), [0.0, 1.0]),
    "leaky_relu": (lambda v, a: np.where(v >= 0, v, a * v), [0.01, 0.3, 2.0]),
    "abs": (lambda v: np.abs(v), [None]),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), [None]),
    "tanh": (np.tanh, [None]),
}


def _grid():
    ends = np.concatenate([-np.geomspace(8, 1e-3, 12), [0.0], np.geomspace(1e-3, 8, 12)])
    pairs = np.array([(a, b) for a in ends for b in ends if a <= b], np.float32)
    return pairs[:, 0:1], pairs[:, 1:2]


@pytest.mark.parametrize(
    "name, constant",
    [(name, c) for name, (_, constants) in ORACLES.items() for c in constants],
)
def test_lines_enclose_the_function_on_a_grid_of_intervals(name, constant):
    entry, (oracle, _) = ACTIVATIONS[name], ORACLES[name]
    lower, upper = _grid()
    constants = () if constant is None else (np.float32(constant),)
    v = np.clip(lower + (upper - lower) * np.linspace(0, 1, 101, dtype=np.float32), lower, upper)
    f = oracle(v.astype(np.float64), *constants)
    ranges = entry.param_range(jnp.asarray(lower), jnp.asarray(upper), *constants)
    choices = [entry.params(jnp.asarray(lower), jnp.asarray(upper), *constants, option=o)
               for o in ("adaptive", "same-slope", "zero", "one")]  # fmt: skip
    rng = np.random.default_rng(0)
    for end in (0, 1):
        choices.append(tuple(r[end] for r in ranges))
    choices.append(tuple(lo + (hi - lo) * rng.uniform(size=lo.shape) for lo, hi in ranges))
    for params in choices:
        for p, (lo, hi) in zip(params, ranges):
            assert np.all(np.asarray(lo) <= np.asarray(p)) and np.all(np.asarray(p) <= hi)
        lines = entry.lines(jnp.asarray(lower), jnp.asarray(upper), *constants, params=params)
        ls, li, us, ui = (np.asarray(x, np.float64) for x in lines)
        tol = 2e-7 * (1 + np.abs(f))  # the float32 rounding of a chord's slope (ReLU's too)
        assert np.all(ls * v + li <= f + tol), name
        assert np.all(us * v + ui >= f - tol), name
    low, high = (np.asarray(b, np.float64) for b in entry.interval(lower, upper, *constants))
    assert np.all(low <= f.min(axis=1, keepdims=True) + 1e-7)
    assert np.all(high >= f.max(axis=1, keepdims=True) - 1e-7)
    # and the range is tight: an end point or the breakpoint reaches it
    assert np.all(np.abs(high - f.max(axis=1, keepdims=True)) <= 1e-5 * (1 + np.abs(high)))


def test_sigmoid_tangents_through_an_end_point_are_tight():
    lower, upper = jnp.array([[-3.0]]), jnp.array([[2.0]])
    entry = ACTIVATIONS["sigmoid"]
    lines = entry.lines(lower, upper, params=entry.params(lower, upper))
    f = jax.nn.sigmoid
    # Both lines touch f at the end points they pass through (Zhang et al. 2018).
    at_lower = lines.upper_slope * lower + lines.upper_intercept
    at_upper = lines.lower_slope * upper + lines.lower_intercept
    assert float(at_lower[0, 0]) == pytest.approx(float(f(lower)[0, 0]), abs=1e-4)
    assert float(at_upper[0, 0]) == pytest.approx(float(f(upper)[0, 0]), abs=1e-4)


def _mixed_mlp(p, x):
    h = x.reshape(x.shape[0], -1)
    h = jax.nn.sigmoid(h @ p[0] + p[1])
    h = jax.nn.leaky_relu(h @ p[2] + p[3], 0.2)
    h = jnp.tanh(h @ p[4])
    h = jnp.clip(h @ p[5], -0.5, 0.7)
    return h @ p[6]


def _mixed_cnn(p, x):
    dims = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, p[0], (1, 1), "SAME", dimension_numbers=dims)
    h = jax.nn.hard_tanh(h + p[1])
    h = jax.lax.conv_general_dilated(h, p[2], (2, 2), "SAME", dimension_numbers=dims)
    h = jnp.abs(h - 0.1)
    h = jax.nn.sigmoid(h.reshape(h.shape[0], -1) @ p[3])
    return jnp.maximum(h, 0.6) @ p[4]


def _networks():
    rng = np.random.default_rng(3)

    def w(*shape, scale=1.5):
        return jnp.asarray(rng.normal(size=shape) * scale / np.sqrt(shape[-2]), jnp.float32)

    def b(n):
        return jnp.asarray(rng.normal(size=n) * 0.3, jnp.float32)

    mlp = [w(16, 8), b(8), w(8, 8), b(8), w(8, 6), w(6, 5), w(5, 3)]
    cnn = [w(3, 3, 1, 3), b(3), w(3, 3, 3, 4), w(16, 6), w(6, 3)]
    return {"mlp": (_mixed_mlp, mlp), "cnn": (_mixed_cnn, cnn)}


NETWORKS = _networks()


@pytest.mark.slow
def test_the_traced_network_computes_the_model_in_both_precisions():
    for apply_fn, params in NETWORKS.values():
        x = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
        net = jc.trace(apply_fn, params, x[:1])
        names = [eq.activation.name for eq in net.activations()]
        assert len(names) >= 4
        np.testing.assert_allclose(net(x), apply_fn(params, x), rtol=1e-6, atol=1e-6)
        from jaxcert.exact._float64 import forward_float64

        with jax.enable_x64(True):
            params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
            want = np.asarray(apply_fn(params64, jnp.asarray(x[:1], jnp.float64))).ravel()
        # float64 throughout but the constants (0.2, -0.5...), which were traced in float32
        np.testing.assert_allclose(forward_float64(net, x[:1]), want, rtol=1e-6, atol=1e-7)
    activations = {
        name: [eq.activation.name for eq in jc.trace(fn, params, x).activations()]
        for name, (fn, params) in NETWORKS.items()
    }
    assert activations == {
        "mlp": ["sigmoid", "leaky_relu", "tanh", "relu", "min"],
        "cnn": ["relu", "min", "abs", "sigmoid", "relu"],
    }


def _methods(net, spec, C, options=("adaptive", "same-slope", "zero", "one")):
    out = {"ibp": jc.bounds.ibp(net, spec, C), "crown-ibp": jc.bounds.crown(
        net, spec, C, intermediate="ibp")}  # fmt: skip
    for option in options:
        out[f"crown-{option}"] = jc.bounds.crown(net, spec, C, relu=option)
    out["alpha-crown"] = jc.bounds.alpha_crown(net, spec, C, steps=10)
    return out


SPEC_ROWS = jnp.broadcast_to(jnp.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]), (2, 2, 3))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("mlp", "linf"),
        pytest.param("cnn", "l2", marks=pytest.mark.slow),
        pytest.param("mlp", "l2", marks=pytest.mark.slow),
        pytest.param("cnn", "linf", marks=pytest.mark.slow),
    ],
)
def test_every_method_contains_every_sampled_output(name, kind):
    apply_fn, params = NETWORKS[name]
    x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 1), minval=0.2, maxval=0.8)
    net = jc.trace(apply_fn, params, x[:1])
    eps = 0.15 if kind == "linf" else 0.6
    spec = (jc.LinfBall if kind == "linf" else jc.L2Ball)(x, eps)
    # every slope option in the slow set; the default run keeps CROWN's own (compile time)
    options = ("adaptive",) if (name, kind) == ("mlp", "linf") else None
    bounds = _methods(net, spec, SPEC_ROWS, *([options] if options else []))
    crown = bounds["crown-adaptive"]
    assert np.all(np.asarray(bounds["alpha-crown"].lower) >= np.asarray(crown.lower) - 1e-6)
    assert np.all(np.asarray(bounds["alpha-crown"].upper) <= np.asarray(crown.upper) + 1e-6)
    for i in range(2):
        points = sample_set(kind, x[i], eps, 10_000, seed=i)
        out = np.asarray(apply_fn(params, points), np.float64) @ np.asarray(SPEC_ROWS[i]).T
        for method, b in bounds.items():
            assert np.all(out >= np.asarray(b.lower[i]) - 1e-6), (method, i)
            assert np.all(out <= np.asarray(b.upper[i]) + 1e-6), (method, i)
    # A zero-width set (same shapes, so no new compilation) gives the forward pass.
    out = np.asarray(apply_fn(params, x)) @ np.asarray(SPEC_ROWS[0]).T
    zero = jc.LinfBall(x, 0.0) if kind == "linf" else jc.L2Ball(x, 0.0)
    for method, b in _methods(net, zero, SPEC_ROWS, *([options] if options else [])).items():
        assert np.all(np.asarray(b.lower) <= out + 1e-6), method
        assert np.all(np.asarray(b.upper) >= out - 1e-6), method
        # up to the rounding allowances, which IBP's widening compounds layer by layer
        np.testing.assert_allclose(b.lower, out, atol=1e-2, err_msg=method)
        np.testing.assert_allclose(b.upper, out, atol=1e-2, err_msg=method)


@pytest.mark.slow
def test_lp_is_at_least_as_tight_as_crown_with_the_same_intermediate_bounds():
    apply_fn, params = NETWORKS["mlp"]
    x = jax.random.uniform(jax.random.key(2), (1, 4, 4, 1), minval=0.2, maxval=0.8)
    net = jc.trace(apply_fn, params, x)
    spec = jc.LinfBall(x, 0.1)
    inter = jc.bounds.intermediate_bounds(net, spec)
    crown = jc.bounds.crown(net, spec, intermediate=inter)
    lp = jc.bounds.lp(net, spec, intermediate=inter)
    out = np.asarray(apply_fn(params, sample_set("linf", x[0], 0.1, 10_000)))
    assert np.all(out >= np.asarray(lp.lower[0]) - 1e-6)
    assert np.all(out <= np.asarray(lp.upper[0]) + 1e-6)
    assert np.all(np.asarray(lp.lower) >= np.asarray(crown.lower) - 1e-4)
    assert np.all(np.asarray(lp.upper) <= np.asarray(crown.upper) + 1e-4)


# --------------------------------------------------------------------------- the exact MILP


def _pwl(p, x):
    h = jax.nn.leaky_relu(x @ p[0] + p[1], 0.1)
    h = jnp.abs(h @ p[2] + p[3])
    h = jnp.clip(h @ p[4] + p[5], -0.4, 0.6)
    return h @ p[6] + p[7]


def _pwl_layers(p):
    """The network as (W, b, [kinks]) layers, each kink (t, left, right, f(t)), float64."""
    w = [np.asarray(a, np.float64) for a in p]
    return [
        (w[0], w[1], [(0.0, 0.1, 1.0, 0.0)]),
        (w[2], w[3], [(0.0, -1.0, 1.0, 0.0)]),
        (w[4], w[5], [(-0.4, 0.0, 1.0, -0.4), (0.6, 1.0, 0.0, 0.6)]),  # max(., -0.4), min(., 0.6)
    ], (w[6], w[7])


def _enumerated_minimum(p, lower, upper, y):
    """min over the box of min_j f_y - f_j: one LP per choice of piece of every kink."""
    layers, (w_out, b_out) = _pwl_layers(p)
    sizes = [w.shape[1] * len(kinks) for w, _, kinks in layers]
    best = np.inf
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        bits = iter(pattern)
        G, h = np.eye(len(lower)), np.zeros(len(lower))  # the value is G^T x + h
        rows, rhs = [], []
        for w, b, kinks in layers:
            G, h = G @ w, h @ w + b
            for t, left, right, ft in kinks:
                side = np.array([next(bits) for _ in range(G.shape[1])])
                for k in range(G.shape[1]):  # left piece: v <= t; right piece: v >= t
                    sign = 1.0 if side[k] == 0 else -1.0
                    rows.append(sign * G[:, k])
                    rhs.append(sign * (t - h[k]))
                slope = np.where(side == 0, left, right)
                G, h = G * slope, ft + slope * (h - t)
        for j in range(w_out.shape[1]):
            if j == y:
                continue
            cost = G @ (w_out[:, y] - w_out[:, j])
            const = h @ (w_out[:, y] - w_out[:, j]) + b_out[y] - b_out[j]
            res = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs),
                          bounds=list(zip(lower, upper)), method="highs")  # fmt: skip
            assert res.status in (0, 2), res.message
            if res.status == 0:
                best = min(best, res.fun + const)
    return best


def _milp_brackets(apply_fn, p, x, eps, enumerated):
    """exact.verify (mode "minimum", the MILP reached through IBP) brackets the minimum margin
    that `enumerated(p, lower, upper, y)` finds over the l_inf ball; returns (result, minimum,
    y)."""
    y = int(jnp.argmax(apply_fn(p, x)))
    net = jc.trace(apply_fn, p, x)
    spec = jc.LinfBall(x, eps)
    (result,) = jc.exact.verify(net, spec, jnp.array([y]), solver="highs", mode="minimum",
                                bounds="ibp", attack_steps=0)  # fmt: skip
    lower, upper = (np.asarray(b, np.float64)[0] for b in spec.box())
    exact = enumerated(p, lower, upper, y)
    assert result.margin_lower <= exact + 1e-5 and exact <= result.margin_upper + 1e-5
    if result.binaries:  # the MILP ran: it brackets the minimum
        assert result.margin_upper - result.margin_lower < 1e-3
    return result, exact, y


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow)])  # fmt: skip
def test_milp_with_leaky_relu_abs_and_clip_agrees_with_enumeration(seed):
    rng = np.random.default_rng(seed)
    shapes = [(2, 2), (2,), (2, 2), (2,), (2, 2), (2,), (2, 3), (3,)]
    p = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    x = jnp.asarray(rng.uniform(0.3, 0.7, (1, 2)), jnp.float32)
    result, exact, y = _milp_brackets(_pwl, p, x, 0.25, _enumerated_minimum)
    assert result.status == ("verified" if exact > 1e-3 else "falsified" if exact < -1e-3 else
                             result.status)  # fmt: skip
    if result.status == "falsified":
        z = jnp.asarray(result.counterexample, jnp.float32).reshape(1, 2)
        assert int(jnp.argmax(_pwl(p, z))) != y


def _sigmoid_mlp(p, x):
    return jax.nn.sigmoid(x @ p[0] + p[1]) @ p[2]


def test_the_milp_refuses_a_smooth_activation_by_name_and_input_splits_decide_it():
    rng = np.random.default_rng(5)
    p = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, 4), (4,), (4, 2))]
    net = jc.trace(_sigmoid_mlp, p, jnp.zeros((1, 2)))
    spec = jc.LinfBall(jnp.full((1, 2), 0.5), 0.1)
    with pytest.raises(ValueError, match="sigmoid"):
        jc.exact.verify(net, spec, jnp.array([0]), strategy="milp")
    with pytest.raises(ValueError, match="sigmoid"):
        jc.exact.verify(net, spec, jnp.array([0]), split="relu")
    center = np.asarray(_sigmoid_mlp(p, jnp.full((1, 2), 0.5)))[0]
    lower, upper = np.full(2, 0.4), np.full(2, 0.6)
    bounds = jc.bounds.crown(net, jc.Box(jnp.full((1, 2), 0.4), jnp.full((1, 2), 0.6)))
    low, high = float(bounds.lower[0, 0]), float(bounds.upper[0, 0])

    def answer(threshold, strategy="milp"):  # the property "y_0 <= threshold" can be reached
        unsafe = [(np.array([[1.0, 0.0]]), np.array([threshold]))]
        prop = jc.Property([jc.Case(lower, upper, unsafe)])
        return jc.exact.verify_property(net, prop, time_limit=20.0, strategy=strategy)[0]

    assert answer(low - 1.0) == "unsat"  # below every bound: no MILP needed
    assert answer(center[0] + 1e-3) == "sat"  # the centre itself reaches it
    assert answer((low + center[0]) / 2) in ("unknown", "sat")  # the bounds cannot refute it
    assert np.isfinite(high)
    # Branch and bound on the inputs decides both sides of the exact minimum (a fine grid).
    grid = np.stack(np.meshgrid(*[np.linspace(0.4, 0.6, 801)] * 2), -1).reshape(-1, 2)
    lowest = float(np.min(np.asarray(_sigmoid_mlp(p, jnp.asarray(grid)))[:, 0]))
    assert lowest > low + 1e-3  # CROWN alone leaves the question open
    assert answer(lowest - 1e-3, "auto") == "unsat"
    assert answer(lowest + 1e-3, "auto") == "sat"


@pytest.mark.parametrize("activation", [pytest.param("sigmoid", marks=pytest.mark.slow),
                                        pytest.param("leaky-relu", marks=pytest.mark.slow),
                                        pytest.param("tanh", marks=pytest.mark.slow),
                                        pytest.param("relu", marks=pytest.mark.slow)])  # fmt: skip
def test_model_zoo_offers_each_activation(activation):
    for spec in ({"kind": "mlp", "hidden": [6], "num_classes": 3, "activation": activation},
                 {"kind": "cnn", "channels": [2], "dense": 4, "num_classes": 3,
                  "activation": activation}):  # fmt: skip
        apply_fn, params = jc.models.init_model(spec, jax.random.key(0), (4, 4, 1))
        x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 1))
        net = jc.trace(apply_fn, params, x[:1])
        np.testing.assert_allclose(net(x), apply_fn(params, x), rtol=1e-6, atol=1e-6)
        loss, _ = jc.train.ibp_loss(apply_fn, params, x, jnp.array([0, 1]), 0.05)
        assert np.isfinite(float(loss))
    with pytest.raises(ValueError, match="activation"):
        jc.models.build_model({"kind": "mlp", "hidden": [2], "activation": "gelu"})
    with pytest.raises(ValueError, match="pool"):
        jc.models.build_model({"kind": "cnn", "pool": "average"})


@pytest.mark.slow  # the default run bounds max pooling in the test of maxima above
def test_the_cnn_offers_max_pooling():
    spec = {"kind": "cnn", "channels": [2, 2], "dense": 4, "num_classes": 3, "pool": "max"}
    apply_fn, params = jc.models.init_model(spec, jax.random.key(0), (8, 8, 1))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    net = jc.trace(apply_fn, params, x[:1])
    assert apply_fn(params, x).shape == (2, 3)
    np.testing.assert_allclose(net(x), apply_fn(params, x), rtol=1e-5, atol=1e-6)
    bounds = jc.bounds.ibp(net, jc.LinfBall(x, 0.02))
    out = np.asarray(apply_fn(params, sample_set("linf", x[0], 0.02, 2000)))
    assert np.all(out >= np.asarray(bounds.lower[0]) - 1e-6)
    assert np.all(out <= np.asarray(bounds.upper[0]) + 1e-6)


# --------------------------------------------------------------------- maxima as ReLU trees


def _pooled(p, x):
    dims = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, p[0], (1, 1), "SAME", dimension_numbers=dims)
    h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")  # 5x5 -> 3x3: padded windows
    h = nn.max_pool(h, (2, 2), strides=(1, 1))  # kernel != stride
    h = jnp.max(h, axis=-1).reshape(h.shape[0], -1) @ p[1]
    return jnp.minimum(jnp.maximum(h[:, :3], h[:, 3:]), h[:, :3] + 0.5)


@pytest.mark.parametrize("methods", [pytest.param("ibp", marks=pytest.mark.slow),
                                     pytest.param("linear", marks=pytest.mark.slow)])  # fmt: skip
def test_max_pooling_and_maxima_are_traced_exactly_and_bounded_soundly(methods):
    rng = np.random.default_rng(8)
    p = [jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32),
         jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)]  # fmt: skip
    x = jax.random.uniform(jax.random.key(3), (2, 5, 5, 1), minval=0.2, maxval=0.8)
    net = jc.trace(_pooled, p, x[:1])
    np.testing.assert_allclose(net(x), _pooled(p, x), rtol=1e-6, atol=1e-6)
    spec = jc.LinfBall(x, 0.05)
    if methods == "ibp":  # the linear ones compile for about 90 s: the slow set runs them
        bounds = {"ibp": jc.bounds.ibp(net, spec)}
    else:
        bounds = {
            "crown": jc.bounds.crown(net, spec),
            "crown-ibp": jc.bounds.crown(net, spec, intermediate="ibp"),
            "alpha-crown": jc.bounds.alpha_crown(net, spec, steps=5),
        }
    for i in range(2):
        out = np.asarray(_pooled(p, sample_set("linf", x[i], 0.05, 10_000, seed=i)))
        for method, b in bounds.items():
            assert np.all(out >= np.asarray(b.lower[i]) - 1e-6), method
            assert np.all(out <= np.asarray(b.upper[i]) + 1e-6), method


def _pair_max(p, x):
    h = (x @ p[0] + p[1]).reshape(x.shape[0], 2, 2)
    return jnp.max(h, axis=-1) @ p[2] + p[3]


def _pooled_max(p, x):
    h = (x @ p[0] + p[1]).reshape(x.shape[0], 2, 2, 2)  # two 2x2 channels
    h = nn.max_pool(h, (2, 2), strides=(2, 2)).reshape(x.shape[0], 2)
    return h @ p[2] + p[3]


def _group_max_minimum(p, lower, upper, y, groups):
    """min over the box of min_j f_y - f_j for f = max over each group of hidden units, then a
    dense layer: one LP per choice of the largest unit of every group."""
    w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in p)
    best = np.inf
    for picked in itertools.product(*groups):
        rows = [w1[:, o] - w1[:, q] for q, g in zip(picked, groups) for o in g if o != q]
        rhs = [b1[q] - b1[o] for q, g in zip(picked, groups) for o in g if o != q]
        G, h = w1[:, list(picked)], b1[list(picked)]
        for j in range(w2.shape[1]):
            if j != y:
                d = w2[:, y] - w2[:, j]
                res = linprog(G @ d, A_ub=np.array(rows), b_ub=np.array(rhs),
                              bounds=list(zip(lower, upper)), method="highs")  # fmt: skip
                if res.status == 0:
                    best = min(best, res.fun + h @ d + b2[y] - b2[j])
    return best


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_milp_of_a_maximum_agrees_with_enumeration(seed):
    rng = np.random.default_rng(seed + 10)
    p = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((3, 4), (4,), (2, 3), (3,))]
    x = jnp.asarray(rng.uniform(0.3, 0.7, (1, 3)), jnp.float32)
    _milp_brackets(_pair_max, p, x, 0.3, functools.partial(_group_max_minimum,
                                                           groups=[(0, 1), (2, 3)]))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_milp_of_max_pooling_agrees_with_enumeration(seed):
    rng = np.random.default_rng(seed + 20)
    p = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((3, 8), (8,), (2, 3), (3,))]
    x = jnp.asarray(rng.uniform(0.3, 0.7, (1, 3)), jnp.float32)
    # NHWC (1, 2, 2, 2): unit 4 * row + 2 * column + channel; a 2x2 window per channel
    groups = [(0, 2, 4, 6), (1, 3, 5, 7)]
    _milp_brackets(_pooled_max, p, x, 0.3, functools.partial(_group_max_minimum, groups=groups))
