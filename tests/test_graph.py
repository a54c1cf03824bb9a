"""Tracing: the traced network evaluates to the model on every supported layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcert as jc
from jaxcert.graph import UnsupportedOperation


class Everything(nn.Module):
    """One of each supported layer: conv (stride, padding, dilation, groups), avg pool,
    batch norm (inference), transpose, squeeze/broadcast, dense and a residual add."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), strides=(1, 1), padding="SAME")(x)
        x = jax.nn.relu(x)
        x = nn.Conv(4, (2, 2), kernel_dilation=(2, 2), feature_group_count=2, padding=1)(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        x = jnp.maximum(x, 0.0)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        h = jax.nn.relu(nn.Dense(16)(x))
        h = h + jax.nn.relu(nn.Dense(16)(h))  # residual
        h = jnp.squeeze(h[:, None, :], axis=1) - jnp.mean(h, axis=1, keepdims=True)
        return nn.Dense(3)(h * 2.0)


def _init_batchnorm_stats(variables):
    stats = variables["batch_stats"]
    key = iter(jax.random.split(jax.random.key(9), 10))
    return {
        "params": variables["params"],
        "batch_stats": jax.tree.map(
            lambda v: jnp.abs(jax.random.normal(next(key), v.shape)) + 0.5, stats
        ),
    }


def test_every_supported_layer_evaluates_exactly():
    model = Everything()
    x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 2))
    variables = _init_batchnorm_stats(model.init(jax.random.key(1), x))
    net = jc.trace(model.apply, variables, x)
    kinds = {e.kind for e in net.equations}
    assert kinds == {"const", "linear", "activation"}
    assert len(net.activations()) == 4
    np.testing.assert_allclose(net(x), model.apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_reference_models_and_nnx():
    x, _ = jc.data.load_digits("test")
    for spec in ({"kind": "mlp", "hidden": [32, 16]}, {"kind": "cnn"}):
        apply_fn, params = jc.models.init_model(spec, jax.random.key(0), x.shape[1:])
        net = jc.trace(apply_fn, params, x[:1])
        np.testing.assert_allclose(net(x[:20]), apply_fn(params, x[:20]), rtol=1e-5, atol=1e-5)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(64, 20, rngs=rngs)
            self.b = nnx.Linear(20, 10, rngs=rngs)

        def __call__(self, v):
            return self.b(nnx.relu(self.a(v.reshape(v.shape[0], -1))))

    apply_fn, params = jc.from_nnx(Net(nnx.Rngs(0)))
    net = jc.trace(apply_fn, params, x[:1])
    np.testing.assert_allclose(net(x[:20]), apply_fn(params, x[:20]), rtol=1e-5, atol=1e-5)


def test_network_is_a_pytree_with_the_weights_as_leaves():
    apply_fn, params = jc.models.init_model({"kind": "mlp", "hidden": [8]}, jax.random.key(0), (4,))
    net = jc.trace(apply_fn, params, jnp.zeros((1, 4)))
    assert len(jax.tree.leaves(net)) == len(jax.tree.leaves(params))
    doubled = jax.tree.map(lambda w: 2 * w, net)
    x = jnp.ones((3, 4))
    want = apply_fn(jax.tree.map(lambda w: 2 * w, params), x)
    np.testing.assert_allclose(jax.jit(lambda n, v: n(v))(doubled, x), want, rtol=1e-6)


def test_float64_models_stay_float64(x64):
    w = jnp.ones((3, 2), jnp.float64)
    net = jc.trace(lambda p, x: jax.nn.relu(x @ p), w, jnp.zeros((1, 3), jnp.float64))
    assert net(jnp.ones((2, 3), jnp.float64)).dtype == jnp.float64


@pytest.mark.parametrize(
    "fn, primitive",
    [
        (lambda p, x: jnp.sin(x @ p), "sin"),
        (lambda p, x: jax.nn.softmax(x @ p), "stop_gradient"),
        (lambda p, x: jnp.exp(x @ p), "exp"),
        (lambda p, x: (x @ p) * (x @ p), "mul"),
    ],
)
def test_unsupported_primitive_names_itself_and_the_line(fn, primitive):
    with pytest.raises(UnsupportedOperation, match=primitive) as err:
        jc.trace(fn, jnp.ones((4, 4)), jnp.zeros((1, 4)))
    assert "test_graph.py" in str(err.value)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda p, x: (3 * x @ p).astype(jnp.int32).astype(jnp.float32), "conversion to int32"),
        (lambda p, x: (x @ p).astype(bool).astype(jnp.float32), "conversion to bool"),
        (lambda p, x: (x @ p > 0).astype(jnp.float32), "'gt'.*type bool"),
        (lambda p, x: jnp.floor(x @ p), "'floor'"),
        (lambda p, x: jnp.round(x @ p), "'round'"),
        (lambda p, x: (x @ p).astype(jnp.bfloat16) @ p, "conversion from float32 to bfloat16"),
        (lambda p, x: (x @ p).astype(jnp.float16), "conversion from float32 to float16"),
    ],
)
def test_non_floating_and_rounding_steps_on_the_input_path_are_refused(fn, match):
    # Traced as linear, (3 * x).astype(int32) over x in [0.3, 0.7] had IBP bounds [1, 1].
    with pytest.raises(UnsupportedOperation, match=match):
        jc.trace(fn, jnp.eye(4), jnp.zeros((1, 4)))


def test_integer_inputs_are_refused():
    with pytest.raises(ValueError, match="x_example must hold floating-point inputs, got int32"):
        jc.trace(lambda p, x: x @ p, jnp.eye(4, dtype=jnp.int32), jnp.zeros((1, 4), jnp.int32))


@pytest.mark.slow
def test_relu_written_with_the_zero_first_works_everywhere():
    # jnp.maximum(0, h) was recorded as a ReLU of the literal: net(x), crown, lp... raised.
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((4, 6), (6,), (6, 3))]

    def apply_fn(p, x):
        return jnp.maximum(0, x @ p[0] + p[1]) @ p[2]

    x = jnp.asarray(rng.uniform(size=(1, 4)), jnp.float32)
    net = jc.trace(apply_fn, params, x)
    np.testing.assert_allclose(net(x), apply_fn(params, x), rtol=1e-6)
    spec, y = jc.LinfBall(x, 0.05), jnp.argmax(apply_fn(params, x), axis=1)
    points = jnp.clip(
        x + jax.random.uniform(jax.random.key(0), (500, 4), minval=-0.05, maxval=0.05), 0, 1
    )
    out = apply_fn(params, points)
    sampled = jnp.min(out[:, y] - out, axis=0).at[y].set(jnp.inf)
    for method, kw in (("ibp", {}), ("crown", {}), ("alpha-crown", {"steps": 2}), ("lp", {})):
        bound = jc.bounds.margins(net, spec, y, method=method, **kw)[0]
        assert jnp.all(bound <= sampled) and jnp.sum(jnp.isfinite(bound)) == 2, method
    counts = jc.bounds.relu_counts(net, spec)[0]
    assert int(counts["active"][0] + counts["inactive"][0] + counts["unstable"][0]) == 6
    (result,) = jc.exact.verify(net, spec, y, solver="highs", attack_steps=0)
    assert result.status in ("verified", "falsified")
    assert result.margin_lower <= float(jnp.min(sampled))
