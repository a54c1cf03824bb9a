"""PGD: stays in the ball and the box, finds planted counterexamples, margin loss by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert as jc


def mlp_apply(p, x):
    return jax.nn.relu(x @ p[0] + p[1]) @ p[2]


def _mlp(seed):
    rng = np.random.default_rng(seed)
    shapes = ((6, 16), (16,), (16, 4))
    return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]


def test_margin_loss_by_hand():
    logits = jnp.array([[1.0, 3.0, 2.0], [0.5, -1.0, 0.2]])
    loss = jc.attacks.margin_loss(logits, jnp.array([1, 0]))
    np.testing.assert_allclose(loss, [2.0 - 3.0, 0.2 - 0.5])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_the_box(norm):
    params = _mlp(0)
    x = jax.random.uniform(jax.random.key(0), (32, 6), minval=0.1, maxval=0.9)
    y = jnp.argmax(mlp_apply(params, x), axis=1)
    eps = 0.3
    z, loss = jc.attacks.pgd(mlp_apply, params, x, y, jax.random.key(1), eps, norm=norm,
                             steps=20, restarts=3, lower=0.1, upper=0.9)  # fmt: skip
    assert np.all(np.asarray(z) >= 0.1) and np.all(np.asarray(z) <= 0.9)
    delta = np.asarray(z - x, np.float64)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-6)
    np.testing.assert_allclose(
        loss, jc.attacks.margin_loss(mlp_apply(params, z), y), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_finds_a_planted_counterexample(norm):
    # f = (x0 - x1, 0): class 0 at x = (0.55, 0.5); moving 0.05 along (-1, +1) flips it, and
    # nothing inside eps = 0.02 (l_inf) or 0.03 (l_2) does.
    def apply_fn(_, x):
        return jnp.stack([x[:, 0] - x[:, 1], jnp.zeros(x.shape[0])], axis=1)

    x = jnp.array([[0.55, 0.5]])
    for eps, flips in ((0.04, True), (0.02, False)):
        z, loss = jc.attacks.pgd(apply_fn, None, x, jnp.array([0]), jax.random.key(0), eps,
                                 norm=norm, steps=30)  # fmt: skip
        assert (float(loss[0]) > 0) == flips
        assert (int(jnp.argmax(apply_fn(None, z)[0])) == 1) == flips


def test_pgd_is_jittable_and_checks_its_input():
    params = _mlp(1)
    x = jnp.full((2, 6), 0.5)
    y = jnp.array([0, 1])
    attack = jax.jit(lambda x: jc.attacks.pgd(mlp_apply, params, x, y, jax.random.key(0), 0.1))
    z, _ = attack(x)
    assert z.shape == x.shape
    with pytest.raises(ValueError, match="norm"):
        jc.attacks.pgd(mlp_apply, params, x, y, jax.random.key(0), 0.1, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        jc.attacks.pgd(mlp_apply, params, x, y, jax.random.key(0), -0.1)
    with pytest.raises(ValueError, match="steps"):
        jc.attacks.pgd(mlp_apply, params, x, y, jax.random.key(0), 0.1, steps=0)
    with pytest.raises(ValueError, match="y must"):
        jc.attacks.pgd(mlp_apply, params, x, y[:1], jax.random.key(0), 0.1)
