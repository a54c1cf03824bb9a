"""The triangle LP relaxation: sound on samples, exact by hand, below the exact optimum of tiny
networks (found by enumerating activation patterns) and at least as tight as IBP."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

import jaxcert as jc
from jaxcert._sets import Box, L1Ball, L2Ball, LinfBall
from jaxcert.bounds._ibp import ibp, ibp_environment
from jaxcert.bounds._interval import Interval
from jaxcert.bounds._lp import lp
from jaxcert.bounds._spec import margin_matrix

pytestmark = pytest.mark.usefixtures("x64")


def _mlp_params(sizes, seed):
    rs = np.random.RandomState(seed)
    return [(rs.randn(m, n) / np.sqrt(m), rs.randn(n) * 0.3) for m, n in zip(sizes, sizes[1:])]


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def residual(params, x):
    (w1, b1), (w2, b2), (w3, b3) = params
    h = jax.nn.relu(x @ w1 + b1)
    h = h + jax.nn.relu(h @ w2 + b2)
    return h @ w3 + b3


def conv(params, x):
    kernel, (w, b) = params
    h = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu(h).reshape(x.shape[0], -1) @ w + b


def _conv_params(seed):
    rs = np.random.RandomState(seed)
    return rs.randn(3, 3, 1, 2) / 3, (rs.randn(32, 3) / 6, rs.randn(3) * 0.3)


NETWORKS = {
    "mlp": (mlp, lambda: _mlp_params([4, 8, 6, 3], 0), (4,)),
    "residual": (residual, lambda: _mlp_params([4, 8, 8, 3], 1), (4,)),
    "conv": (conv, lambda: _conv_params(2), (4, 4, 1)),
}


def _network(name):
    fn, make, shape = NETWORKS[name]
    params = make()
    return jc.trace(fn, params, np.zeros((1, *shape))), params


def _samples(spec, b, rs, n=10_000):
    """n points of example b of the set: random points plus, for l_inf, random box corners."""
    lower, upper = (np.asarray(a[b]) for a in spec.box())
    if isinstance(spec, L1Ball):
        x, eps = np.asarray(spec.x[b]), float(spec.eps[b])
        d = x.size
        direction = rs.laplace(size=(n, d))
        direction /= np.abs(direction).sum(1, keepdims=True)
        radius = eps * rs.uniform(size=(n, 1)) ** (1 / d)
        vertices = np.concatenate([np.eye(d), -np.eye(d)]) * eps
        z = x.ravel() + np.concatenate([direction * radius, vertices])
        # Clipping to the data box moves every coordinate towards x: z stays in the l_1 ball.
        return np.clip(z.reshape(-1, *x.shape), lower, upper)
    uniform = rs.uniform(lower, upper, size=(n // 2, *lower.shape))
    corners = np.where(rs.rand(n - n // 2, *lower.shape) < 0.5, lower, upper)
    return np.concatenate([uniform, corners])


def _assert_within(bounds, values, tol=1e-9):
    assert np.all(values >= np.asarray(bounds.lower) - tol)
    assert np.all(values <= np.asarray(bounds.upper) + tol)


@pytest.mark.parametrize(
    "name,ball",
    [pytest.param(name, ball, marks=pytest.mark.slow) if (name, ball) == ("mlp", LinfBall)
     else (name, ball) for ball in (LinfBall, L1Ball) for name in NETWORKS],
)  # the l_inf MLP case (15 s) in the slow set: its l1 twin and the l_inf CNN and residual stay
def test_sound_on_samples(name, ball):
    net, params = _network(name)
    rs = np.random.RandomState(3)
    shape = net.input_shape
    x = rs.uniform(0, 1, size=(2, *shape))
    x[1].flat[0] = 1.0  # on the data box's face: the ball is clipped
    spec = ball(x, 0.15 if ball is LinfBall else 0.4)
    C = margin_matrix(np.array([0, 2]), 3)
    bounds = lp(net, spec, C)
    assert bounds.lower.shape == (2, 2)
    assert np.all(bounds.lower <= bounds.upper)
    fn = NETWORKS[name][0]
    for b in range(2):
        outputs = np.asarray(fn(params, _samples(spec, b, rs)))
        _assert_within(Interval(bounds.lower[b], bounds.upper[b]), outputs @ np.asarray(C[b]).T)


def test_single_relu_by_hand():
    # y = relu(x) on [-1, 2]: the triangle has vertices (-1, 0), (0, 0) and (2, 2).
    net = jc.trace(
        lambda p, x: jnp.concatenate([jax.nn.relu(x), x], axis=1), None, np.zeros((1, 1))
    )
    spec = Box(np.array([[-1.0]]), np.array([[2.0]]))
    C = np.array([[[1.0, 0.0], [1.0, -1 / 3], [-1.0, 0.5], [0.0, 1.0]]])
    bounds = lp(net, spec, C)
    exact_lower = np.array([0.0, 0.0, -1.0, -1.0])
    exact_upper = np.array([2.0, 4 / 3, 0.0, 2.0])
    assert np.all(bounds.lower[0] <= exact_lower)
    assert np.all(bounds.upper[0] >= exact_upper)
    np.testing.assert_allclose(bounds.lower[0], exact_lower, atol=1e-5)
    np.testing.assert_allclose(bounds.upper[0], exact_upper, atol=1e-5)


def _exact_range(params, lower, upper, c):
    """min and max of c @ f(z) over the box by one LP per activation pattern of a ReLU MLP."""
    sizes = [b.size for _, b in params[:-1]]
    best_min, best_max = np.inf, -np.inf
    for flat in itertools.product([0.0, 1.0], repeat=sum(sizes)):
        patterns = np.split(np.array(flat), np.cumsum(sizes)[:-1])
        # With the pattern fixed, every pre-activation is affine in z: a z + a0.
        a, a0 = np.eye(lower.size), np.zeros(lower.size)
        rows, rhs = [], []
        for (w, b), active in zip(params[:-1], patterns):
            a, a0 = a @ w, a0 @ w + b
            sign = 1 - 2 * active  # active: pre >= 0, i.e. -pre <= 0
            rows.append(sign[:, None] * a.T)
            rhs.append(-sign * a0)
            a, a0 = a * active, a0 * active
        w, b = params[-1]
        objective, offset = a @ w @ c, (a0 @ w + b) @ c
        bounds = list(zip(lower, upper))
        results = [
            linprog(
                s * objective,
                np.concatenate(rows),
                np.concatenate(rhs),
                bounds=bounds,
                method="highs",
            )
            for s in (1, -1)
        ]
        if results[0].status == 2:  # this pattern is impossible on the box
            continue
        assert all(r.status == 0 for r in results)
        best_min = min(best_min, results[0].fun + offset)
        best_max = max(best_max, -results[1].fun + offset)
    return best_min, best_max


def test_below_exact_optimum_of_tiny_network():
    params = _mlp_params([2, 4, 3, 3], 4)  # 7 ReLUs: 128 activation patterns
    net = jc.trace(mlp, params, np.zeros((1, 2)))
    spec = LinfBall(np.array([[0.5, 0.5]]), 0.5)  # the whole data box: many unstable ReLUs
    C = np.array([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 0.0, -1.0]]])
    bounds = lp(net, spec, C)
    lower, upper = (np.asarray(a[0]) for a in spec.box())
    for k in range(C.shape[1]):
        exact_min, exact_max = _exact_range(params, lower, upper, C[0, k])
        assert bounds.lower[0, k] <= exact_min + 1e-6
        assert bounds.upper[0, k] >= exact_max - 1e-6


def _ibp_intermediate(net, spec):
    per_example = []
    for b in range(spec.batch_size):
        lower, upper = (a[b][None] for a in spec.box())
        env = ibp_environment(net, lower, upper)
        per_example.append([env[eq.inputs[0]] for eq in net.activations()])
    return [
        Interval(
            jnp.concatenate([e[i].lower for e in per_example]),
            jnp.concatenate([e[i].upper for e in per_example]),
        )
        for i in range(len(net.activations()))
    ]


@pytest.mark.parametrize("name", ["mlp", "residual"])
def test_tighter_than_ibp(name):
    net, _ = _network(name)
    spec = LinfBall(np.random.RandomState(5).uniform(0.2, 0.8, (3, 4)), 0.2)
    C = margin_matrix(np.array([0, 1, 2]), 3)
    bounds = lp(net, spec, C)
    interval = ibp(net, spec, C)
    assert np.all(bounds.lower >= interval.lower - 1e-5)
    assert np.all(bounds.upper <= interval.upper + 1e-5)
    assert np.any(bounds.lower > interval.lower + 1e-3)  # strictly tighter somewhere
    # The same IBP bounds passed explicitly give the same LP.
    explicit = lp(net, spec, C, intermediate=_ibp_intermediate(net, spec))
    np.testing.assert_allclose(explicit.lower, bounds.lower, atol=1e-9)
    np.testing.assert_allclose(explicit.upper, bounds.upper, atol=1e-9)


def test_highs_agrees_with_glop():
    net, _ = _network("mlp")
    spec = LinfBall(np.full((1, 4), 0.5), 0.2)
    glop, highs = lp(net, spec), lp(net, spec, solver="highs")
    np.testing.assert_allclose(glop.lower, highs.lower, atol=1e-5)
    np.testing.assert_allclose(glop.upper, highs.upper, atol=1e-5)


def test_crown_intermediate_bounds_are_sound():
    net, params = _network("residual")
    spec = LinfBall(np.full((1, 4), 0.5), 0.2)
    bounds = lp(net, spec, intermediate="crown")
    outputs = np.asarray(residual(params, _samples(spec, 0, np.random.RandomState(6))))
    _assert_within(Interval(bounds.lower[0], bounds.upper[0]), outputs)


def test_bad_inputs():
    net, _ = _network("mlp")
    x = np.full((1, 4), 0.5)
    with pytest.raises(ValueError, match="L2Ball"):
        lp(net, L2Ball(x, 0.1))
    with pytest.raises(ValueError, match="solver"):
        lp(net, LinfBall(x, 0.1), solver="pdlp")
    with pytest.raises(ValueError, match="intermediate"):
        lp(net, LinfBall(x, 0.1), intermediate="exact")
    with pytest.raises(ValueError, match="ReLUs"):
        lp(net, LinfBall(x, 0.1), intermediate=[])
    with pytest.raises(ValueError, match="shape"):
        lp(net, LinfBall(np.full((1, 5), 0.5), 0.1))
