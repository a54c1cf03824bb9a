"""Rounding is never taken as proof: margins within float32 rounding of zero are not certified.

Each network is a small MLP whose ReLUs are all stable on the ball, so its exact minimum margin
is a linear minimum over a box, computed here in float64 from the float32 weights; the output
bias is then set so that this minimum is -delta, a few float32 rounding errors below zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert as jc

EPS = np.float32(0.01)
Y, J = 0, 1  # the margin f_Y - f_J is placed just below zero


def _apply(p, x):
    return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]


def _near_zero_mlp(seed, delta, width=8, scale=30.0):
    """Float32 weights and a centre x whose exact min of f_Y - f_J over the ball is in
    [-delta - ulp, -delta]."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(6, width)) * scale
    x = rng.uniform(0.3, 0.7, size=(1, 6))
    reach = EPS * np.abs(w1).sum(0)  # how far a pre-activation moves over the ball
    active = rng.random(width) < 0.7
    margin = 1 + rng.random(width) + reach  # every ReLU stays on one side by at least 1
    b1 = np.where(active, margin, -margin) - (x @ w1)[0]
    w2, b2 = rng.normal(size=(width, 3)) * scale, rng.normal(size=3) * scale
    w1, b1, w2, b2, x = (np.asarray(a, np.float32) for a in (w1, b1, w2, b2, x))

    def exact_min(b2):
        W1, B1, W2, B2, X = (np.asarray(a, np.float64) for a in (w1, b1, w2, b2, x))
        c = W2[active, Y] - W2[active, J]
        g, h = W1[:, active] @ c, B1[active] @ c + B2[Y] - B2[J]
        low, high = np.maximum(X[0] - EPS, 0), np.minimum(X[0] + EPS, 1)
        return float(np.minimum(g * low, g * high).sum() + h)

    b2[Y] = np.float32(b2[Y] - (exact_min(b2) + delta))
    while exact_min(b2) > -delta:
        b2[Y] = np.nextafter(b2[Y], np.float32(-np.inf))
    assert -delta - abs(np.spacing(b2[Y])) <= exact_min(b2) <= -delta
    return [jnp.asarray(a) for a in (w1, b1, w2, b2)], jnp.asarray(x)


# Before bounds were rounding-safe, CROWN, CROWN-IBP and alpha-CROWN certified every one of
# these (margin bounds up to +2.4e-4 for exact minima of -1e-5 to -5e-5).
CASES = [(2, 1e-5), (4, 1e-5), (5, 5e-5), (7, 1e-5), (9, 5e-5), (13, 1e-5)]


@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp", "alpha-crown", "lp"])
def test_a_margin_just_below_zero_is_never_certified(method):
    params, x = _near_zero_mlp(*CASES[0])
    net = jc.trace(_apply, params, x)
    structure = jax.tree.structure(net)
    for seed, delta in CASES:
        params, x = _near_zero_mlp(seed, delta)
        net = jax.tree.unflatten(structure, params)  # same graph: compiled once
        spec = jc.LinfBall(x, EPS)
        bound = float(jc.bounds.margins(net, spec, jnp.array([Y]), method=method)[0, J])
        assert bound <= -delta, (seed, delta, bound)
        assert not bool(jc.bounds.certify(net, spec, jnp.array([Y]), method=method)[0])


@pytest.mark.slow
def test_certified_accuracy_of_a_normal_model_is_unchanged():
    # float64 bounds carry a negligible allowance (1e-13 relative): the float32 answers with
    # their allowance must agree with them on an ordinary model.
    x, y = jc.data.load_digits("test")
    x, y = x[:40], y[:40]
    spec = {"kind": "mlp", "hidden": [32, 16]}
    apply_fn, params = jc.models.init_model(spec, jax.random.key(0), x.shape[1:])
    eps = 0.002
    y = np.asarray(jnp.argmax(apply_fn(params, x), axis=1))
    net = jc.trace(apply_fn, params, x[:1])
    certified = jc.bounds.certify(net, jc.LinfBall(x, eps), y)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        net64 = jc.trace(apply_fn, params64, x64[:1])
        certified64 = jc.bounds.certify(net64, jc.LinfBall(x64, eps), y)
    assert 0 < int(np.sum(certified64)) < len(y)
    np.testing.assert_array_equal(certified, certified64)
