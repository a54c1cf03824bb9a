"""Interval bound propagation: hand-computed cases, soundness by sampling, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampling import sample_set

import jaxcert as jc


def test_linear_layer_by_hand():
    w = jnp.array([[1.0, -2.0], [0.5, 3.0]])  # y = x @ w + b
    b = jnp.array([0.1, -0.2])
    net = jc.trace(lambda p, x: x @ p[0] + p[1], (w, b), jnp.zeros((1, 2)))
    box = jc.Box(jnp.array([[0.0, -1.0]]), jnp.array([[1.0, 2.0]]))
    bounds = jc.bounds.ibp(net, box)
    # y0 = x0 + 0.5 x1 + 0.1 in [0 - 0.5 + 0.1, 1 + 1 + 0.1]; y1 = -2 x0 + 3 x1 - 0.2, each
    # widened by the rounding allowance (512 float32 epsilons of the terms' magnitude).
    _assert_widened(bounds, [[-0.4, -5.2]], [[2.1, 5.8]], magnitude=40)


def _assert_widened(bounds, lower, upper, magnitude):
    """The bounds hold the exact ones and exceed them by at most the rounding allowance."""
    slack = float(jc._rounding.allowance(magnitude, jnp.float32))
    for got, want, sign in ((bounds.lower, lower, -1), (bounds.upper, upper, 1)):
        excess = sign * (np.asarray(got) - np.asarray(want))
        assert np.all(excess >= 0) and np.all(excess <= slack), (got, want)


def test_two_by_two_convolution_by_hand():
    kernel = jnp.array([[1.0, -1.0], [2.0, 0.0]]).reshape(2, 2, 1, 1)

    def conv(p, x):
        return jax.lax.conv_general_dilated(
            x, p, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    net = jc.trace(conv, kernel, jnp.zeros((1, 3, 3, 1)))
    bounds = jc.bounds.ibp(net, jc.LinfBall(jnp.full((1, 3, 3, 1), 0.5), 0.5))
    _assert_widened(bounds, -np.ones((1, 2, 2, 1)), 3 * np.ones((1, 2, 2, 1)), magnitude=40)


def test_lone_relu():
    net = jc.trace(lambda p, x: jax.nn.relu(x), None, jnp.zeros((1, 1)))
    bounds = jc.bounds.ibp(net, jc.Box(jnp.array([[-1.0]]), jnp.array([[2.0]])))
    assert bounds.lower.tolist() == [[0.0]] and bounds.upper.tolist() == [[2.0]]


def _networks():
    rng = np.random.default_rng(0)
    w1, w2, w3 = (
        jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32)
        for s in ((16, 12), (12, 12), (12, 4))
    )
    b1, b2 = jnp.asarray(rng.normal(size=12) * 0.1), jnp.asarray(rng.normal(size=12) * 0.1)

    def residual(p, x):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p[0] + p[3])
        h = h + jax.nn.relu(h @ p[1] + p[4])
        return h @ p[2]

    mlp_apply, mlp = jc.models.init_model(
        {"kind": "mlp", "hidden": [12, 12], "num_classes": 4}, jax.random.key(1), (4, 4, 1)
    )
    cnn_apply, cnn = jc.models.init_model(
        {"kind": "cnn", "channels": [4, 4], "dense": 12, "num_classes": 4},
        jax.random.key(2),
        (4, 4, 1),
    )
    return {
        "mlp": (mlp_apply, mlp),
        "cnn": (cnn_apply, cnn),
        "residual": (residual, (w1, w2, w3, b1, b2)),
    }


NETWORKS = _networks()
SETS = {"linf": (jc.LinfBall, 0.1), "l2": (jc.L2Ball, 0.4), "l1": (jc.L1Ball, 1.0)}


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("kind", sorted(SETS))
def test_ibp_contains_every_sampled_output(name, kind):
    apply_fn, params = NETWORKS[name]
    x = jax.random.uniform(jax.random.key(3), (2, 4, 4, 1), minval=0.2, maxval=0.8)
    net = jc.trace(apply_fn, params, x)
    cls, eps = SETS[kind]
    bounds = jc.bounds.ibp(net, cls(x, eps))
    for i in range(2):
        points = sample_set(kind, x[i], eps, 10_000, seed=i)
        out = np.asarray(apply_fn(params, points))
        tol = 1e-5 * (1 + np.abs(out))
        assert np.all(out >= np.asarray(bounds.lower[i]) - tol)
        assert np.all(out <= np.asarray(bounds.upper[i]) + tol)


def test_zero_width_set_gives_the_forward_pass():
    apply_fn, params = NETWORKS["cnn"]
    x = jax.random.uniform(jax.random.key(4), (3, 4, 4, 1))
    net = jc.trace(apply_fn, params, x)
    bounds = jc.bounds.ibp(net, jc.LinfBall(x, 0.0))
    out = apply_fn(params, x)  # up to the rounding allowance, which widens the bounds
    assert jnp.all(bounds.lower <= out) and jnp.all(out <= bounds.upper)
    np.testing.assert_allclose(bounds.lower, out, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bounds.upper, out, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "name", ["mlp", pytest.param("cnn", marks=pytest.mark.slow),
             pytest.param("residual", marks=pytest.mark.slow)],
)  # fmt: skip
def test_specification_matrix(name):
    apply_fn, params = NETWORKS[name]
    x = jax.random.uniform(jax.random.key(5), (2, 4, 4, 1))
    net = jc.trace(apply_fn, params, x)
    C = jnp.array([[[1.0, -1.0, 0.0, 0.0]], [[0.0, 0.0, 2.0, -1.0]]])
    bounds = jc.bounds.ibp(net, jc.LinfBall(x, 0.05), C=C)
    assert bounds.lower.shape == (2, 1)
    for i in range(2):
        out = (
            np.asarray(apply_fn(params, sample_set("linf", x[i], 0.05, 2000))) @ np.asarray(C[i]).T
        )
        assert np.all(out >= np.asarray(bounds.lower[i]) - 1e-5)
        assert np.all(out <= np.asarray(bounds.upper[i]) + 1e-5)


def test_specification_folded_into_the_last_layer_by_hand():
    rng = np.random.default_rng(7)
    w1, b1 = rng.normal(size=(3, 5)), rng.normal(size=5)
    w2, b2 = rng.normal(size=(5, 4)), rng.normal(size=4)
    params = [jnp.asarray(p, jnp.float32) for p in (w1, b1, w2, b2)]

    def mlp(p, x):
        return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]

    x = np.array([[0.2, 0.4, 0.7]])
    net = jc.trace(mlp, params, x)
    C = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 2.0, 0.0, -1.0]])
    bounds = jc.bounds.ibp(net, jc.LinfBall(jnp.asarray(x, jnp.float32), 0.1), C=C[None])
    # By hand: the ReLU outputs' intervals, then C folded into the last layer, C W2 and C b2.
    w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
    center, radius = x[0] @ w1 + b1, 0.1 * np.abs(w1).sum(0)
    h_low, h_high = np.maximum(center - radius, 0), np.maximum(center + radius, 0)
    cw, cb = C @ w2.T, C @ b2
    lower = np.maximum(cw, 0) @ h_low + np.minimum(cw, 0) @ h_high + cb
    upper = np.maximum(cw, 0) @ h_high + np.minimum(cw, 0) @ h_low + cb
    # Bounding the logits first and applying C is looser on this network.
    logits = jc.bounds.ibp(net, jc.LinfBall(jnp.asarray(x, jnp.float32), 0.1))
    loose = np.maximum(C, 0) @ np.asarray(logits.lower[0]) + np.minimum(C, 0) @ np.asarray(
        logits.upper[0]
    )
    assert np.all(loose <= lower) and np.any(loose < lower - 0.05)
    _assert_widened(bounds, lower[None], upper[None], magnitude=100)


def test_bad_input():
    apply_fn, params = NETWORKS["mlp"]
    x = jnp.full((2, 4, 4, 1), 0.5)
    net = jc.trace(apply_fn, params, x)
    with pytest.raises(ValueError, match="eps"):
        jc.LinfBall(x, -0.1)
    with pytest.raises(ValueError, match="x"):
        jc.LinfBall(x.at[0, 0, 0, 0].set(jnp.nan), 0.1)
    with pytest.raises(ValueError, match="empty"):
        jc.Box(x, x - 1)
    with pytest.raises(ValueError, match="shape"):
        jc.bounds.ibp(net, jc.LinfBall(jnp.full((2, 16), 0.5), 0.1))
    with pytest.raises(ValueError, match="C"):
        jc.bounds.ibp(net, jc.LinfBall(x, 0.1), C=jnp.ones((2, 1, 3)))
    with pytest.raises(TypeError, match="spec"):
        jc.bounds.ibp(net, x)


def test_average_pooling_with_padding_is_right_in_large_batches():
    """XLA:CPU sums padded windows wrongly from a batch of about 512 on (SAME padding, 2x2
    window, stride 2, 2x1 images: errors of order 1, found by the soundness harness): the
    network, IBP and CROWN must give each image's own value in a batch of 600."""
    from jax import lax

    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)

    def f(p, x):
        pooled = lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "SAME") / 4
        return pooled.reshape(x.shape[0], -1) @ p

    x = jnp.asarray(rng.uniform(0.2, 0.8, (600, 2, 1, 5)), jnp.float32)
    alone = np.concatenate([np.asarray(f(p, x[i : i + 1])) for i in range(len(x))])
    net = jc.trace(f, p, x[:1])
    np.testing.assert_allclose(np.asarray(net(x)), alone, atol=1e-6)
    for method in (jc.bounds.ibp, jc.bounds.crown):
        b = method(net, jc.LinfBall(x, 0.0))
        assert np.all(np.asarray(b.lower) <= alone + 1e-6), method
        assert np.all(np.asarray(b.upper) >= alone - 1e-6), method
        assert np.max(np.asarray(b.upper) - np.asarray(b.lower)) < 1e-2, method
