"""IBP training loss: equal to a hand-assembled computation, differentiable, and it works."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcert as jc


def mlp(p, x):
    return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    shapes = ((5, 8), (8,), (8, 3), (3,))
    return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]


def _numpy_ibp_loss(p, x, y, eps, kappa):
    return _numpy_robust_loss(p, x, y, _numpy_ibp_margins(p, x, y, eps), kappa)


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0])
def test_ibp_loss_equals_a_hand_assembled_computation(kappa):
    p = _params()
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (6, 5)), jnp.float32)
    y = jnp.array([0, 1, 2, 1, 0, 2])
    loss, aux = jax.jit(lambda p: jc.train.ibp_loss(mlp, p, x, y, 0.1, kappa))(p)
    # The interval bounds carry a rounding allowance (jaxcert._rounding): the loss is slightly
    # above the hand value (looser bounds), never below it.
    want = _numpy_ibp_loss(p, x, np.asarray(y), 0.1, kappa)
    assert want * (1 - 1e-6) <= float(loss) <= want * (1 + 2e-3)
    assert 0 <= float(aux["ibp_verified"]) <= 1


def test_ibp_loss_gradient_matches_finite_differences():
    p = _params(2)
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (4, 5)), jnp.float32)
    y = jnp.array([0, 1, 2, 1])

    def f(w):
        return jc.train.ibp_loss(mlp, [w, *p[1:]], x, y, 0.05)[0]

    grad = jax.grad(f)(p[0])
    direction = jnp.asarray(np.random.default_rng(4).normal(size=p[0].shape), jnp.float32)
    h = 1e-2
    numeric = (f(p[0] + h * direction) - f(p[0] - h * direction)) / (2 * h)
    assert float(jnp.sum(grad * direction)) == pytest.approx(float(numeric), rel=2e-2, abs=1e-3)


def test_ramp_schedule_warms_up_then_hits_its_end_value():
    schedule = jc.train.ramp_schedule(0.1, warmup_steps=10, ramp_steps=20)
    assert float(schedule(0)) == 0.0 and float(schedule(9)) == 0.0
    assert float(schedule(20)) == pytest.approx(0.05)
    assert float(schedule(30)) == pytest.approx(0.1) and float(schedule(1000)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        jc.train.ramp_schedule(0.1, -1, 10)


def test_ibp_loss_rejects_bad_kappa_and_eps():
    x, y = jnp.full((2, 5), 0.5), jnp.array([0, 1])
    with pytest.raises(ValueError, match="kappa"):
        jc.train.ibp_loss(mlp, _params(), x, y, 0.1, kappa=1.5)
    with pytest.raises(ValueError, match="eps"):
        jc.train.ibp_loss(mlp, _params(), x, y, -0.1)


@pytest.mark.slow
def test_ibp_training_raises_ibp_verified_accuracy_on_digits():
    train_x, train_y = jc.data.load_digits("train")
    test_x, test_y = jc.data.load_digits("test")
    apply_fn, params = jc.models.init_model(
        {"kind": "mlp", "hidden": [32]}, jax.random.key(0), train_x.shape[1:]
    )
    params = jc.train.fit(apply_fn, params, train_x, train_y, jax.random.key(1), sigma=0.0,
                          epochs=5)  # fmt: skip
    eps = 0.03

    def verified(params):
        net = jc.trace(apply_fn, params, test_x[:1])
        return float(jnp.mean(jc.bounds.certify(net, jc.LinfBall(test_x, eps), test_y, "ibp")))

    before = verified(params)
    optimizer = optax.adam(1e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, x, y):
        grads = jax.grad(lambda p: jc.train.ibp_loss(apply_fn, p, x, y, eps)[0])(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    order = np.random.default_rng(0).permutation(len(train_x))
    for _ in range(3):
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            params, state = step(params, state, train_x[idx], train_y[idx])
    after = verified(params)
    print(f"IBP-verified accuracy at eps {eps}: {before:.3f} -> {after:.3f}")
    assert after > before + 0.1, (before, after)  # measured: 0.017 -> 0.253


def _numpy_backward_margins(p, x, y, eps, slope_rule):
    """Lower bounds of f_y - f_j for a one-hidden-layer MLP by a hand-written backward pass.

    The hidden pre-activations' bounds are exact intervals (IBP and CROWN agree on one linear
    layer); unstable ReLUs get the upper line u (z - l) / (u - l) and the lower line
    slope * z with slope 1[u > -l] ("adaptive", CROWN) or u / (u - l) ("same-slope", the
    Wong-Kolter dual network).
    """
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in p)
    x = np.asarray(x, np.float64)
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    out = np.zeros((len(x), w2.shape[1] - 1))
    for i in range(len(x)):
        c, r = (lo[i] + hi[i]) / 2 @ w1 + b1, (hi[i] - lo[i]) / 2 @ np.abs(w1)
        low, up = c - r, c + r
        others = [j for j in range(w2.shape[1]) if j != y[i]]
        for k, j in enumerate(others):
            a = w2[:, y[i]] - w2[:, j]
            total = b2[y[i]] - b2[j]
            for n in range(len(a)):
                if low[n] >= 0:
                    slope = 1.0
                elif up[n] <= 0:
                    slope = 0.0
                else:
                    upper_slope = up[n] / (up[n] - low[n])
                    if a[n] < 0:
                        slope = upper_slope
                        total += a[n] * -upper_slope * low[n]
                    elif slope_rule == "adaptive":
                        slope = float(up[n] > -low[n])
                    else:
                        slope = upper_slope
                total += a[n] * slope * b1[n]
                a[n] = a[n] * slope
            g = w1 @ a
            out[i, k] = total + np.sum(np.where(g > 0, g * lo[i], g * hi[i]))
    return out


def _numpy_ibp_margins(p, x, y, eps):
    """IBP lower bounds of f_y - f_j, with the margin folded into the last layer (elision)."""
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in p)
    lo, hi = np.clip(np.asarray(x, np.float64) - eps, 0, 1), np.clip(np.asarray(x) + eps, 0, 1)
    c, r = (lo + hi) / 2 @ w1 + b1, (hi - lo) / 2 @ np.abs(w1)
    lo, hi = np.maximum(c - r, 0), np.maximum(c + r, 0)
    margins = []
    for i, label in enumerate(y):
        row = []
        for j in range(w2.shape[1]):
            if j != label:
                w, b = w2[:, label] - w2[:, j], b2[label] - b2[j]
                row.append(np.maximum(w, 0) @ lo[i] + np.minimum(w, 0) @ hi[i] + b)
        margins.append(row)
    return np.array(margins)


def _numpy_robust_loss(p, x, y, margins, kappa):
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in p)
    clean = np.maximum(np.asarray(x, np.float64) @ w1 + b1, 0) @ w2 + b2

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y])

    worst = np.zeros_like(clean)
    for i in range(len(y)):
        worst[i, [j for j in range(clean.shape[1]) if j != y[i]]] = -margins[i]
    return kappa * ce(clean) + (1 - kappa) * ce(worst)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_crown_ibp_loss_equals_a_hand_written_backward_pass(beta):
    p = _params(5)
    x = jnp.asarray(np.random.default_rng(6).uniform(0, 1, (6, 5)), jnp.float32)
    y = np.array([0, 1, 2, 1, 0, 2])
    loss, aux = jax.jit(lambda p: jc.train.crown_ibp_loss(mlp, p, x, y, 0.15, 0.3, beta))(p)
    margins = beta * _numpy_backward_margins(p, x, y, 0.15, "adaptive")
    margins += (1 - beta) * _numpy_ibp_margins(p, x, y, 0.15)
    want = _numpy_robust_loss(p, x, y, margins, 0.3)
    # Looser by the bounds' rounding allowance (jaxcert._rounding), hence rel=2e-3.
    assert float(loss) == pytest.approx(want, rel=2e-3)
    assert set(aux) == {"clean_loss", "robust_loss", "ibp_verified", "crown_ibp_verified"}


def test_dual_loss_equals_the_wong_kolter_bound_by_hand():
    p = _params(7)
    x = jnp.asarray(np.random.default_rng(8).uniform(0, 1, (6, 5)), jnp.float32)
    y = np.array([2, 1, 0, 1, 0, 2])
    loss, aux = jax.jit(lambda p: jc.train.dual_loss(mlp, p, x, y, 0.1))(p)
    margins = _numpy_backward_margins(p, x, y, 0.1, "same-slope")
    # Looser by the bounds' rounding allowance (jaxcert._rounding), hence rel=2e-3.
    assert float(loss) == pytest.approx(_numpy_robust_loss(p, x, y, margins, 0.0), rel=2e-3)
    verified = np.mean(np.all(margins > 0, axis=1))
    assert float(aux["dual_verified"]) == pytest.approx(verified)


def deep(p, x):
    return jax.nn.relu(jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]) @ p[4] + p[5]


def _deep_params(seed):
    rng = np.random.default_rng(seed)
    shapes = ((5, 7), (7,), (7, 6), (6,), (6, 3), (3,))
    return [jnp.asarray(rng.normal(size=s) / 2, jnp.float32) for s in shapes]


def test_relu_stability_equals_tanh_of_interval_products_by_hand():
    p = _deep_params(9)
    x = jnp.asarray(np.random.default_rng(10).uniform(0, 1, (4, 5)), jnp.float32)
    loss, aux = jax.jit(lambda p: jc.train.relu_stability(deep, p, x, 0.2))(p)
    q = [np.asarray(v, np.float64) for v in p]
    lo, hi = np.clip(np.asarray(x) - 0.2, 0, 1), np.clip(np.asarray(x) + 0.2, 0, 1)
    total, unstable = np.zeros(len(x)), np.zeros(len(x))
    for w, b in ((q[0], q[1]), (q[2], q[3])):
        c, r = (lo + hi) / 2 @ w + b, (hi - lo) / 2 @ np.abs(w)
        total -= np.tanh(1 + (c - r) * (c + r)).sum(axis=1)
        unstable += ((c - r) * (c + r) < 0).sum(axis=1)
        lo, hi = np.maximum(c - r, 0), np.maximum(c + r, 0)
    # Looser by the bounds' rounding allowance (jaxcert._rounding), hence rel=2e-3.
    assert float(loss) == pytest.approx(total.mean(), rel=2e-3)
    assert float(aux["unstable"]) == pytest.approx(unstable.mean())


@pytest.mark.slow
def test_relu_stability_steps_make_relus_stable():
    p = _deep_params(11)
    x = jnp.asarray(np.random.default_rng(12).uniform(0, 1, (16, 5)), jnp.float32)
    spec = jc.LinfBall(x, 0.1)

    def unstable(p):
        net = jc.trace(deep, p, x[:1])
        return sum(int(c["unstable"].sum()) for c in jc.bounds.relu_counts(net, spec, method="ibp"))

    before = unstable(p)
    grad = jax.jit(jax.grad(lambda p: jc.train.relu_stability(deep, p, x, 0.1)[0]))
    optimizer = optax.adam(1e-2)
    state = optimizer.init(p)
    for _ in range(100):
        updates, state = optimizer.update(grad(p), state, p)
        p = optax.apply_updates(p, updates)
    assert unstable(p) < before / 2, (before, unstable(p))


def test_relu_counts_match_the_bounds_and_add_up():
    p = _deep_params(13)
    x = jnp.asarray(np.random.default_rng(14).uniform(0, 1, (5, 5)), jnp.float32)
    net = jc.trace(deep, p, x[:1])
    spec = jc.LinfBall(x, 0.1)
    for method in ("ibp", "crown"):
        counts = jc.bounds.relu_counts(net, spec, method=method)
        hidden = jc.bounds.intermediate_bounds(net, spec, method=method)
        for c, b, width in zip(counts, hidden, (7, 6)):
            lower, upper = np.asarray(b.lower), np.asarray(b.upper)
            np.testing.assert_array_equal(c["active"], (lower >= 0).sum(axis=1))
            np.testing.assert_array_equal(c["unstable"], ((lower < 0) & (upper > 0)).sum(axis=1))
            np.testing.assert_array_equal(c["active"] + c["inactive"] + c["unstable"], width)
    crown_unstable = sum(c["unstable"] for c in jc.bounds.relu_counts(net, spec))
    ibp_unstable = sum(c["unstable"] for c in jc.bounds.relu_counts(net, spec, method="ibp"))
    assert np.all(crown_unstable <= ibp_unstable)


@pytest.mark.slow
def test_pgd_loss_is_cross_entropy_at_points_inside_the_ball():
    p = _params(15)
    x = jnp.asarray(np.random.default_rng(16).uniform(0, 1, (8, 5)), jnp.float32)
    y = jnp.array([0, 1, 2, 1, 0, 2, 1, 0])
    key = jax.random.key(3)
    loss, aux = jax.jit(lambda p: jc.train.pgd_loss(mlp, p, x, y, key, 0.1, steps=20))(p)
    z, ce = jc.attacks.pgd(mlp, p, x, y, key, 0.1, steps=20, objective="cross-entropy",
                           random_start=True)  # fmt: skip
    assert np.all(np.abs(np.asarray(z - x)) <= 0.1 + 1e-6)
    logits = mlp(p, z)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    np.testing.assert_allclose(ce, optax.softmax_cross_entropy_with_integer_labels(logits, y),
                               rtol=1e-5)  # fmt: skip
    assert float(aux["robust_loss"]) >= float(aux["clean_loss"])
    # Danskin: the gradient is that of the cross-entropy at the (fixed) attack points.
    grad = jax.grad(lambda p: jc.train.pgd_loss(mlp, p, x, y, key, 0.1, steps=20)[0])(p)
    fixed = jax.grad(
        lambda p: optax.softmax_cross_entropy_with_integer_labels(mlp(p, z), y).mean()
    )(p)
    for g, f in zip(grad, fixed):
        np.testing.assert_allclose(g, f, rtol=1e-4, atol=1e-6)


def test_l1_penalty_sums_weights_but_not_biases():
    p = _params(17)
    want = np.abs(np.asarray(p[0])).sum() + np.abs(np.asarray(p[2])).sum()
    assert float(jc.train.l1_penalty(p)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(  # standard and PGD: also tests/test_train.py
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m in ("standard", "pgd") else m
     for m in jc.train.METHODS],
)  # fmt: skip
def test_every_training_method_is_jitable_and_differentiable(method):
    p = _params(18)
    x = jnp.asarray(np.random.default_rng(19).uniform(0, 1, (6, 5)), jnp.float32)
    y = jnp.array([0, 1, 2, 1, 0, 2])
    loss_fn = jc.train.training_loss(method, relu_stability_weight=0.1, l1_weight=1e-3)
    kw = {"eps": 0.1, "kappa": 0.5, "beta": 0.5, "sigma": 0.2}

    @jax.jit
    def value_and_grad(p):
        return jax.value_and_grad(lambda p: loss_fn(mlp, p, x, y, jax.random.key(0), **kw)[0])(p)

    loss, grads = value_and_grad(p)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in grads)
    _, aux = loss_fn(mlp, p, x, y, jax.random.key(0), **kw)
    assert "relu_stability" in aux and "unstable" in aux


def test_schedules_are_read_at_the_step_count():
    def loss_fn(apply_fn, params, x, y, key, eps):
        return jnp.sum(params[0]) * 0, {"eps": jnp.asarray(eps, jnp.float32)}

    schedule = jc.train.ramp_schedule(0.1, warmup_steps=2, ramp_steps=4)
    seen = []
    x, y = jnp.zeros((10, 5)), jnp.zeros(10, jnp.int32)
    jc.train.fit(mlp, _params(), x, y, jax.random.key(0), epochs=4, batch_size=5,
                 loss_fn=loss_fn, eps=schedule,
                 progress=lambda e, p, loss, aux: seen.append(aux["eps"]))  # fmt: skip
    # Steps 0..7, two per epoch: the per-epoch mean of the schedule at those steps.
    want = [np.mean([float(schedule(s)) for s in (2 * e, 2 * e + 1)]) for e in range(4)]
    np.testing.assert_allclose(seen, want, rtol=1e-6)


def test_training_loss_rejects_bad_options():
    with pytest.raises(ValueError, match="training method"):
        jc.train.training_loss("trades")
    with pytest.raises(ValueError, match="relu_stability_weight"):
        jc.train.training_loss("pgd", relu_stability_weight=-1.0)
    with pytest.raises(ValueError, match="beta"):
        jc.train.crown_ibp_loss(mlp, _params(), jnp.full((2, 5), 0.5), jnp.array([0, 1]), 0.1,
                                beta=2.0)  # fmt: skip
    with pytest.raises(ValueError, match="objective"):
        jc.attacks.pgd(mlp, _params(), jnp.full((2, 5), 0.5), jnp.array([0, 1]),
                       jax.random.key(0), 0.1, objective="hinge")  # fmt: skip
