"""CROWN and alpha-CROWN: soundness by sampling, the Wong-Kolter dual, exact minima, the API."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sampling import sample_set
from scipy.optimize import linprog

import jaxcert as jc

RELUS = ("adaptive", "same-slope", "zero", "one")
SETS = {"linf": (jc.LinfBall, 0.1), "l2": (jc.L2Ball, 0.4), "l1": (jc.L1Ball, 1.0)}

SLOW = pytest.mark.slow  # run by hand: pytest -m slow


def _dense(rng, shapes):
    return [jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32) for s in shapes]


def mlp(p, x):
    """A plain-function MLP: p = [W1, b1, W2, b2, ..., WL, bL]."""
    h = x.reshape(x.shape[0], -1)
    for i in range(0, len(p) - 2, 2):
        h = jax.nn.relu(h @ p[i] + p[i + 1])
    return h @ p[-2] + p[-1]


def residual(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p[0] + p[1])
    h = h + jax.nn.relu(h @ p[2] + p[3])
    return h @ p[4]


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(16, 10, rngs=rngs)
        self.out = nnx.Linear(10, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1))))


def _networks():
    rng = np.random.default_rng(0)
    cnn_apply, cnn = jc.models.init_model(
        {"kind": "cnn", "channels": [4, 4], "dense": 12, "num_classes": 4},
        jax.random.key(2),
        (4, 4, 1),
    )
    # Perturbed so that no layer is dead at initialisation (zero biases).
    cnn = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(7), v.shape), cnn)
    return {
        "mlp": (mlp, _dense(rng, ((16, 12), (12,), (12, 12), (12,), (12, 4), (4,)))),
        "residual": (residual, _dense(rng, ((16, 12), (12,), (12, 12), (12,), (12, 4)))),
        "cnn": (cnn_apply, cnn),
        "nnx": jc.from_nnx(NnxMLP(nnx.Rngs(0))),
    }


NETWORKS = _networks()
X = jax.random.uniform(jax.random.key(3), (2, 4, 4, 1), minval=0.2, maxval=0.8)


def _assert_contains(bounds, outputs, i):
    tol = 1e-5 * (1 + np.abs(outputs))
    assert np.all(outputs >= np.asarray(bounds.lower[i]) - tol)
    assert np.all(outputs <= np.asarray(bounds.upper[i]) + tol)


@functools.cache
def _outputs(name, kind):
    """Network outputs at 10^4 points of each example's set (shared by the soundness tests)."""
    apply_fn, params = NETWORKS[name]
    eps = SETS[kind][1]
    points = [sample_set(kind, x, eps, 10_000, seed=i) for i, x in enumerate(X)]
    return [np.asarray(apply_fn(params, p)) for p in points]


def _check_sound(name, kind, bounds_of, C=None):
    cls, eps = SETS[kind]
    bounds = bounds_of(cls(X, eps))
    for i, out in enumerate(_outputs(name, kind)):
        _assert_contains(bounds, out if C is None else out @ np.asarray(C[i]).T, i)
    return bounds


def _assert_tighter(inner, outer):
    """inner is inside outer, up to float rounding (they come from different compilations)."""
    for a, b in ((inner.lower, outer.lower), (outer.upper, inner.upper)):
        assert np.all(np.asarray(a) - np.asarray(b) >= -1e-6 * (1 + np.abs(b)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SETS))
def test_every_option_is_sound_on_a_residual_network(kind):
    apply_fn, params = NETWORKS["residual"]
    net = jc.trace(apply_fn, params, X)
    C = jax.random.normal(jax.random.key(4), (2, 3, 4))
    for relu, intermediate in itertools.product(RELUS, ("crown", "ibp")):
        _check_sound(
            "residual",
            kind,
            lambda s, r=relu, m=intermediate: jc.bounds.crown(net, s, C, relu=r, intermediate=m),
            C,
        )


@pytest.mark.parametrize(
    "name,kind",
    [(name, kind) if (name, kind) == ("mlp", "linf") else pytest.param(name, kind, marks=SLOW)
     for name in ("mlp", "cnn") for kind in sorted(SETS)],  # fmt: skip
)
def test_crown_and_alpha_crown_are_sound(name, kind):
    apply_fn, params = NETWORKS[name]
    net = jc.trace(apply_fn, params, X)
    crown = _check_sound(name, kind, lambda s: jc.bounds.crown(net, s))
    alpha = _check_sound(name, kind, lambda s: jc.bounds.alpha_crown(net, s))
    _assert_tighter(alpha, crown)
    ibp = jc.bounds.ibp(net, SETS[kind][0](X, SETS[kind][1]))
    assert np.mean(crown.upper - crown.lower) < np.mean(ibp.upper - ibp.lower)


@pytest.mark.slow
def test_alpha_crown_improves_on_crown():
    rng = np.random.default_rng(5)
    params = _dense(rng, ((16, 32), (32,), (32, 32), (32,), (32, 5), (5,)))
    net = jc.trace(mlp, params, X)
    spec = jc.LinfBall(X, 0.1)
    C = jc.bounds._spec.margin_matrix(jnp.array([0, 1]), 5)
    crown = jc.bounds.crown(net, spec, C)
    alpha = jc.bounds.alpha_crown(net, spec, C, steps=10)
    _assert_tighter(alpha, crown)
    assert np.mean(alpha.lower - crown.lower) > 1e-3
    for i in range(2):
        out = np.asarray(mlp(params, sample_set("linf", X[i], 0.1, 10_000, seed=i)))
        _assert_contains(alpha, out @ np.asarray(C[i]).T, i)


def test_zero_width_set_gives_the_forward_pass():
    apply_fn, params = NETWORKS["cnn"]
    net = jc.trace(apply_fn, params, X)
    bounds = jc.bounds.crown(net, jc.LinfBall(X, 0.0))
    out = apply_fn(params, X)  # up to the rounding allowance, which widens the bounds
    assert jnp.all(bounds.lower <= out) and jnp.all(out <= bounds.upper)
    np.testing.assert_allclose(bounds.lower, out, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bounds.upper, out, rtol=1e-3, atol=1e-3)


def _wong_kolter(weights, biases, bounds, c, x, eps):
    """The dual objective J(nu) of Wong and Kolter (2018), Theorem 1, in column convention.

    z_{i+1} = M_i zhat_i + b_i; `bounds` holds (l, u) of each hidden pre-activation. J is a lower
    bound of c^T f(x') over ||x' - x||_inf <= eps.
    """
    mats = [np.asarray(w, np.float64).T for w in weights]
    nu = -np.asarray(c, np.float64)  # nu_k
    objective = -nu @ np.asarray(biases[-1], np.float64)
    for i in range(len(mats) - 1, 0, -1):
        nu_hat = mats[i].T @ nu
        lower, upper = (np.asarray(b, np.float64) for b in bounds[i - 1])
        unstable = (lower < 0) & (upper > 0)
        d = np.where(unstable, upper / np.where(unstable, upper - lower, 1), lower >= 0)
        nu = d * nu_hat
        objective += np.sum(np.where(unstable, lower * np.maximum(nu, 0), 0))
        objective -= nu @ np.asarray(biases[i - 1], np.float64)
    nu_hat_1 = mats[0].T @ nu
    return objective - x @ nu_hat_1 - eps * np.abs(nu_hat_1).sum()


def test_same_slope_equals_the_wong_kolter_dual_network():
    rng = np.random.default_rng(6)
    params = _dense(rng, ((16, 10), (10,), (10, 8), (8,), (8, 3), (3,)))
    net = jc.trace(mlp, params, X)
    spec = jc.LinfBall(X, 0.15, lower=-np.inf, upper=np.inf)
    C = jax.random.normal(jax.random.key(8), (2, 4, 3))
    bounds = jc.bounds.crown(net, spec, C, relu="same-slope")
    hidden = jc.bounds.intermediate_bounds(net, spec, relu="same-slope")
    weights, biases = params[::2], params[1::2]
    for i in range(2):
        layer_bounds = [(h.lower[i], h.upper[i]) for h in hidden]
        x = np.asarray(X[i], np.float64).reshape(-1)
        for k in range(C.shape[1]):
            c = np.asarray(C[i, k])
            lower = _wong_kolter(weights, biases, layer_bounds, c, x, 0.15)
            upper = -_wong_kolter(weights, biases, layer_bounds, -c, x, 0.15)
            # Equal up to CROWN's rounding allowance, by which its bounds are moved outwards.
            assert bounds.lower[i, k] <= lower + 1e-5 and bounds.upper[i, k] >= upper - 1e-5
            np.testing.assert_allclose(bounds.lower[i, k], lower, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(bounds.upper[i, k], upper, rtol=1e-3, atol=1e-3)


def _exact_margin_minima(maps, num_relus, x, eps, y):
    """min over the l_inf ball (in [0, 1]) of f_y - f_j, by enumerating activation patterns.

    `maps(pattern)` gives the affine maps (G, h) of each ReLU layer's pre-activations, as
    functions of the input under that pattern, and last the logits' map; each pattern is one LP
    (infeasible ones are skipped). Entry y is +inf.
    """
    box = list(zip(np.maximum(x - eps, 0), np.minimum(x + eps, 1)))
    best = np.full(3, np.inf)
    for pattern in itertools.product([0.0, 1.0], repeat=num_relus):
        *hidden, (g_out, h_out) = maps(np.array(pattern))
        g = np.concatenate([g for g, _ in hidden])
        h = np.concatenate([h for _, h in hidden])
        sign = np.where(np.array(pattern) > 0, -1.0, 1.0)  # active: z >= 0, inactive: z <= 0
        for j in range(3):
            if j == y:
                continue
            cost = g_out[y] - g_out[j]
            res = linprog(cost, A_ub=sign[:, None] * g, b_ub=-sign * h, bounds=box, method="highs")
            assert res.status in (0, 2), res.message
            if res.status == 0:
                best[j] = min(best[j], res.fun + h_out[y] - h_out[j])
    return best


def _mlp_maps(p, pattern):
    g, h = np.eye(p[0].shape[0]), np.zeros(p[0].shape[0])
    maps, start = [], 0
    for i in range(0, len(p) - 2, 2):
        w, b = np.asarray(p[i], np.float64), np.asarray(p[i + 1], np.float64)
        g, h = g @ w, h @ w + b
        maps.append((g.T, h))
        d = pattern[start : start + w.shape[1]]
        g, h, start = g * d, h * d, start + w.shape[1]
    w, b = np.asarray(p[-2], np.float64), np.asarray(p[-1], np.float64)
    return [*maps, ((g @ w).T, h @ w + b)]


def _residual_maps(p, pattern):
    w1, b1, w2, b2, w3 = (np.asarray(v, np.float64) for v in p)
    n = w1.shape[1]
    g1, h1 = w1, b1
    ga, ha = g1 * pattern[:n], h1 * pattern[:n]
    g2, h2 = ga @ w2, ha @ w2 + b2
    gb, hb = ga + g2 * pattern[n:], ha + h2 * pattern[n:]
    return [(g1.T, h1), (g2.T, h2), ((gb @ w3).T, hb @ w3)]


def _tiny():
    rng = np.random.default_rng(9)
    return {
        "mlp": (mlp, _dense(rng, ((3, 4), (4,), (4, 4), (4,), (4, 3), (3,))), _mlp_maps),
        "residual": (residual, _dense(rng, ((3, 4), (4,), (4, 4), (4,), (4, 3))), _residual_maps),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "residual"])
def test_margins_never_exceed_the_exact_minimum(name):
    apply_fn, params, maps = _tiny()[name]
    x = jnp.array([[0.4, 0.5, 0.6]])
    net = jc.trace(apply_fn, params, x)
    y = int(np.argmax(apply_fn(params, x)[0]))
    spec = jc.LinfBall(x, 0.3)
    exact = _exact_margin_minima(lambda d: maps(params, d), 8, np.asarray(x[0], np.float64), 0.3, y)
    found = {}
    for method in ("ibp", "crown", "crown-ibp", "alpha-crown", "lp"):
        found[method] = np.asarray(jc.bounds.margins(net, spec, [y], method=method)[0])
        assert np.all(found[method] <= exact + 1e-5), method
    assert np.all(found["alpha-crown"] >= found["crown"] - 1e-6)


def test_flax_cnn_and_nnx_mlp():
    for name in ("nnx", "cnn"):
        apply_fn, params = NETWORKS[name]
        net = jc.trace(apply_fn, params, X)
        bounds = _check_sound(
            name, "linf", lambda s, n=net: jc.bounds.crown(n, s, intermediate="ibp")
        )
        assert bounds.lower.shape == apply_fn(params, X).shape


@pytest.mark.slow
def test_margins_certify_and_chunks_agree_with_crown():
    apply_fn, params = NETWORKS["mlp"]
    net = jc.trace(apply_fn, params, X)
    y = np.array([1, 3])
    for eps in (0.0, 0.02, 0.2):
        spec = jc.LinfBall(X, eps)
        found = jc.bounds.margins(net, spec, y)
        assert found.shape == (2, 4) and np.all(found[np.arange(2), y] == np.inf)
        C = jc.bounds._spec.margin_matrix(jnp.asarray(y), 4)
        direct = jc.bounds.crown(net, spec, C)
        for i in range(2):
            others = [j for j in range(4) if j != y[i]]
            np.testing.assert_allclose(found[i, others], direct.lower[i], rtol=1e-6)
        certified = jc.bounds.certify(net, spec, y)
        assert certified.shape == (2,) and certified.dtype == bool
        np.testing.assert_array_equal(certified, np.all(direct.lower > 0, axis=1))
        chunked = jc.bounds.crown(net, spec, C, chunk=5)
        np.testing.assert_allclose(chunked.lower, direct.lower, rtol=1e-5, atol=1e-6)
    logits = apply_fn(params, X)
    assert np.all(jc.bounds.certify(net, jc.LinfBall(X, 0.0), np.argmax(logits, axis=1)))


@pytest.mark.parametrize("method", ["crown", "ibp"])
def test_given_intermediate_bounds_are_used_as_they_are(method):
    apply_fn, params = NETWORKS["residual"]
    net = jc.trace(apply_fn, params, X)
    spec = jc.LinfBall(X, 0.05)
    given = jc.bounds.intermediate_bounds(net, spec, method=method)
    same = jc.bounds.crown(net, spec, intermediate=given)
    want = jc.bounds.crown(net, spec, intermediate=method)
    np.testing.assert_allclose(same.lower, want.lower, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same.upper, want.upper, rtol=1e-5, atol=1e-6)
    # Looser (still valid) bounds give looser but sound output bounds.
    wider = [jc.bounds.Interval(b.lower - 0.5, b.upper + 0.5) for b in given]
    loose = jc.bounds.crown(net, spec, intermediate=wider)
    assert np.all(loose.lower <= same.lower + 1e-6) and np.all(loose.upper >= same.upper - 1e-6)
    assert np.any(loose.lower < same.lower - 1e-4)
    for i in range(len(X)):
        z = sample_set("linf", X[i], 0.05, 2000, seed=i)
        out = np.asarray(apply_fn(params, jnp.asarray(z, jnp.float32)))
        assert np.all(out >= loose.lower[i] - 1e-5) and np.all(out <= loose.upper[i] + 1e-5)
    with pytest.raises(ValueError, match="intermediate"):
        jc.bounds.crown(net, spec, intermediate=given[:-1])


def test_bad_input():
    apply_fn, params = NETWORKS["mlp"]
    net = jc.trace(apply_fn, params, X)
    spec = jc.LinfBall(X, 0.1)
    with pytest.raises(ValueError, match="adaptive"):
        jc.bounds.crown(net, spec, relu="triangle")
    with pytest.raises(ValueError, match="ibp"):
        jc.bounds.crown(net, spec, intermediate="lp")
    with pytest.raises(ValueError, match="alpha-crown"):
        jc.bounds.margins(net, spec, [0, 1], method="milp")
    with pytest.raises(ValueError, match="y"):
        jc.bounds.margins(net, spec, [0, 4])
    with pytest.raises(ValueError, match="y"):
        jc.bounds.certify(net, spec, [0, 1, 2])
    with pytest.raises(ValueError, match="C"):
        jc.bounds.crown(net, spec, C=jnp.ones((2, 1, 3)))
    with pytest.raises(ValueError, match="shape"):
        jc.bounds.alpha_crown(net, jc.LinfBall(jnp.full((2, 16), 0.5), 0.1))
    with pytest.raises(ValueError, match="steps"):
        jc.bounds.alpha_crown(net, spec, steps=-1)
    with pytest.raises(TypeError, match="spec"):
        jc.bounds.intermediate_bounds(net, X)


@pytest.mark.parametrize("intermediate", ["crown", pytest.param("ibp", marks=pytest.mark.slow)])
def test_dead_paths_over_an_l2_ball_give_finite_bounds_and_gradients(intermediate):
    """Where every path to an output is cut (a dead ReLU, a zero weight), its linear bound has
    a zero row, and the gradient of ||0||_2 was NaN: alpha-CROWN returned NaN (a seed of the
    soundness harness), and so did the gradient of an l2 training loss."""
    params = {"w1": jnp.array([[1.0, -1.0], [0.5, 1.0]]), "b1": jnp.array([-10.0, 0.2]),
              "w2": jnp.array([[1.0, 0.0], [0.0, 0.0]]), "b2": jnp.array([0.1, -0.1])}  # fmt: skip

    def apply_fn(p, x):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    x = jnp.array([[0.3, 0.6]])
    spec = jc.L2Ball(x, 0.5, lower=-jnp.inf, upper=jnp.inf)
    net = jc.trace(apply_fn, params, x)
    bound = jc.bounds.alpha_crown(net, spec, steps=3, intermediate=intermediate)
    # the outputs are the constants b2 (up to the rounding allowance)
    np.testing.assert_allclose(bound.lower, [[0.1, -0.1]], atol=1e-4)
    np.testing.assert_allclose(bound.upper, [[0.1, -0.1]], atol=1e-4)
    grads = jax.grad(lambda p: jc.bounds.crown(jc.trace(apply_fn, p, x), spec).lower.sum())(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
