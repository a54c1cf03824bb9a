import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcert import data, models, train

SPEC = {"kind": "mlp", "hidden": [32], "num_classes": 10}


@pytest.fixture(scope="module")
def mlp():
    return models.init_model(SPEC, jax.random.key(0), (8, 8, 1))


@pytest.fixture(scope="module")
def batch():
    x, y = data.load_digits("train")
    return x[:16], y[:16]


def _numpy_cross_entropy(logits, y):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean()


def test_loss_matches_independent_computation(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    key = jax.random.key(3)
    noise = np.asarray(jax.random.normal(key, x.shape, jnp.float32))
    expected = _numpy_cross_entropy(apply_fn(params, x + 0.5 * noise), y)
    loss = train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.5)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    clean = _numpy_cross_entropy(apply_fn(params, x), y)
    assert abs(float(loss) - clean) > 1e-3  # the noise is really there


@pytest.mark.parametrize(
    "noise, draw",
    [
        ("gaussian", jax.random.normal),
        ("laplace", jax.random.laplace),
        ("uniform", lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -1.0, 1.0)),
    ],
)
def test_loss_draws_the_noise_it_is_given(mlp, batch, noise, draw):
    """The augmentation noise is the one `smoothing.certify` samples, sigma its scale; the
    default stays Gaussian, bit for bit, and `training_loss` passes the noise on."""
    apply_fn, params = mlp
    x, y = batch
    key = jax.random.key(3)
    expected = train.cross_entropy_loss(apply_fn, params, x + 0.5 * draw(key, x.shape, x.dtype), y)
    loss = train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.5, noise)
    np.testing.assert_array_equal(loss, expected)
    loss_fn = train.training_loss("gaussian")
    np.testing.assert_array_equal(loss_fn(apply_fn, params, x, y, key, sigma=0.5, noise=noise)[0],
                                  expected)  # fmt: skip
    if noise == "gaussian":
        np.testing.assert_array_equal(
            train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.5), expected
        )
    with pytest.raises(ValueError, match="noise must be one of"):
        train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.5, "cauchy")


def test_sigma_zero_is_plain_cross_entropy(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    plain = train.cross_entropy_loss(apply_fn, params, x, y)
    np.testing.assert_allclose(plain, _numpy_cross_entropy(apply_fn(params, x), y), rtol=1e-5)
    for key in (jax.random.key(4), jax.random.PRNGKey(4)):
        np.testing.assert_array_equal(
            train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.0), plain
        )


@pytest.mark.slow  # the loss and its gradient are also checked by test_certified_training.py
def test_gradient_finite_and_jittable(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    loss_fn = jax.jit(train.gaussian_augmentation_loss, static_argnums=0)
    key = jax.random.key(5)
    np.testing.assert_allclose(
        loss_fn(apply_fn, params, x, y, key, 0.25),
        train.gaussian_augmentation_loss(apply_fn, params, x, y, key, 0.25),
        rtol=1e-6,
    )
    # sigma may also be traced.
    assert jnp.isfinite(loss_fn(apply_fn, params, x, y, key, jnp.float32(0.25)))
    grads = jax.grad(train.gaussian_augmentation_loss, argnums=1)(apply_fn, params, x, y, key, 0.25)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(bool(jnp.any(g != 0)) for g in leaves)


def test_negative_sigma_rejected(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    for sigma in (-0.1, np.float32(-1.0), float("nan")):
        with pytest.raises(ValueError, match="sigma must be >= 0"):
            train.gaussian_augmentation_loss(apply_fn, params, x, y, jax.random.key(0), sigma)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        train.fit(apply_fn, params, x, y, jax.random.key(0), sigma=-1.0, epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(apply_fn, params, x, y, jax.random.key(0), sigma=0.1, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="equal lengths"):
        train.fit(apply_fn, params, x, y[:3], jax.random.key(0), sigma=0.1, epochs=1)


def test_non_finite_hyperparameters_rejected(mlp, batch):
    """An infinite learning rate, eps or loss weight trains a garbage model: refused by name."""
    apply_fn, params = mlp
    x, y = batch
    for lr in (-1.0, 0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
            train.fit(apply_fn, params, x, y, jax.random.key(0), epochs=1, learning_rate=lr)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        train.fit(apply_fn, params, x, y, jax.random.key(0), sigma=float("inf"), epochs=1)
    with pytest.raises(ValueError, match="eps must be finite and >= 0, got inf"):
        train.ramp_schedules("ibp", float("inf"), 100)
    for name in ("relu_stability_weight", "l1_weight"):
        with pytest.raises(ValueError, match=f"{name} must be finite and >= 0, got nan"):
            train.training_loss("ibp", **{name: float("nan")})


def test_train_step_decreases_loss(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    optimizer = optax.adam(1e-2)
    step = train.make_train_step(apply_fn, optimizer, sigma=0.1)
    params = jax.tree.map(jnp.array, params)  # the step donates its inputs
    opt_state = optimizer.init(params)
    losses = []
    for i in range(20):
        params, opt_state, loss, _ = step(params, opt_state, x, y, jax.random.key(i))
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 2


@pytest.mark.slow
def test_fit_reaches_accuracy_on_digits():
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    apply_fn, params = models.init_model(
        {"kind": "mlp", "hidden": [64]}, jax.random.key(0), (8, 8, 1)
    )
    initial = jax.tree.map(np.array, params)
    seen = []
    trained = train.fit(
        apply_fn,
        params,
        train_x,
        train_y,
        jax.random.key(1),
        sigma=0.25,
        epochs=10,
        batch_size=64,
        learning_rate=3e-3,
        progress=lambda epoch, params, loss, aux: seen.append((epoch, loss)),
    )
    assert [epoch for epoch, _ in seen] == list(range(10))
    assert seen[-1][1] < seen[0][1]
    assert train.accuracy(apply_fn, trained, test_x, test_y, batch_size=100) >= 0.85
    # The caller's parameters are left intact.
    jax.tree.map(np.testing.assert_array_equal, params, initial)


@pytest.mark.slow
def test_fit_is_deterministic(mlp, batch):
    apply_fn, params = mlp
    x, y = batch
    first, second = (
        train.fit(apply_fn, params, x, y, jax.random.key(7), sigma=0.25, epochs=2, batch_size=5)
        for _ in range(2)
    )
    jax.tree.map(np.testing.assert_array_equal, first, second)


def test_accuracy_matches_argmax(mlp):
    apply_fn, params = mlp
    x, y = data.load_digits("test")
    expected = np.mean(np.argmax(apply_fn(params, x), axis=1) == y)
    assert train.accuracy(apply_fn, params, x, y, batch_size=77) == pytest.approx(expected)
