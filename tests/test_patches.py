"""The fast convolution transpose and patch-form backward passes equal their plain versions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxcert as jc
from jaxcert.bounds import _crown
from jaxcert.bounds._linear import conv_transpose
from jaxcert.bounds._patches import conv_chain, patch_bounds

CONVS = [  # (input height, kernel, stride, padding)
    (14, 4, 2, "SAME"),
    (9, 3, 2, "VALID"),
    (10, 3, 1, "SAME"),
    (11, 5, 3, ((2, 1), (0, 3))),
    (7, 2, 3, "VALID"),  # stride larger than the kernel: some input positions get nothing
    (8, 3, 2, ((-1, 2), (1, -1))),  # negative padding crops
]


@pytest.mark.parametrize("height,kernel,stride,padding", CONVS)
def test_conv_transpose_equals_the_vjp(height, kernel, stride, padding):
    rng = np.random.default_rng(0)
    spatial = (height, height + 1)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)

    def conv(x):
        return lax.conv_general_dilated(
            x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    out, vjp = jax.vjp(conv, jnp.zeros((1, *spatial, 3)))
    y = jnp.asarray(rng.normal(size=(4, *out.shape[1:])), jnp.float32)
    want = jax.vmap(lambda r: vjp(r[None])[0][0])(y)
    pads = padding
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(spatial, (kernel, kernel), (stride, stride), padding)
    got = conv_transpose(y, k, (stride, stride), pads, spatial)
    np.testing.assert_allclose(got, want, atol=1e-5)


def nchw_net(p, x):
    """Plain JAX in NCHW/OIHW layout: normalisation, two convolutions, a dense layer."""
    h = (x - 0.3) / 0.7
    for w, b, stride, padding in ((p[0], p[1], 2, "SAME"), (p[2], p[3], 1, "VALID")):
        h = lax.conv_general_dilated(
            h, w, (stride, stride), padding, dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        h = jax.nn.relu(h + b[None, :, None, None])
    h = jax.nn.relu(-2.0 * h)  # a scale between ReLUs
    return h.reshape(h.shape[0], -1) @ p[4]


def _networks():
    rng = np.random.default_rng(1)
    shapes = [(4, 2, 3, 3), (4,), (3, 4, 2, 2), (3,), (3 * 2 * 2, 5)]
    nchw = [jnp.asarray(rng.normal(size=s) * 0.6, jnp.float32) for s in shapes]
    cnn_apply, cnn = jc.models.init_model(
        {"kind": "cnn", "channels": [3, 4], "dense": 6, "kernel": 4, "num_classes": 3},
        jax.random.key(3),
        (8, 8, 1),
    )
    cnn = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(4), v.shape), cnn)
    return {"nchw": (nchw_net, nchw, (2, 6, 6)), "flax_cnn": (cnn_apply, cnn, (8, 8, 1))}


SETS = {
    "linf": lambda x: jc.LinfBall(x, 0.1),
    "l2": lambda x: jc.L2Ball(x, 0.5),
    "l1": lambda x: jc.L1Ball(x, 1.0),
    "box": lambda x: jc.Box(x - 0.05, x + 0.2),
}


@pytest.mark.parametrize(
    "name,kind",
    [
        ("nchw", "linf"),
        ("flax_cnn", "linf"),
        *(pytest.param(name, kind, marks=pytest.mark.slow)
          for name, kind in [("nchw", "l2"), ("nchw", "box"), ("nchw", "l1"), ("flax_cnn", "box"),
                             ("flax_cnn", "l1"), ("flax_cnn", "l2")]),
    ],
)  # fmt: skip
def test_patch_bounds_equal_the_full_sized_backward_pass(name, kind):
    apply_fn, params, shape = _networks()[name]
    x = jax.random.uniform(jax.random.key(5), (3, *shape))
    net = jc.trace(apply_fn, params, x[:1])
    spec = SETS[kind](x)
    chained = [eq for eq in net.activations() if conv_chain(net, eq.inputs[0])]
    assert len(chained) >= 2  # both convolution ReLUs go through patches

    def both(example):
        env, bounds = _crown._activation_bounds(net, example, "adaptive", "ibp", None)

        def relax(eq):
            return _crown.relaxation(eq, bounds[eq], env, "adaptive")

        out = []
        for eq in chained:
            var = eq.inputs[0]
            n = int(np.prod(var.shape))
            eye = jnp.eye(n, dtype=var.dtype).reshape(n, *var.shape)
            full = _crown._two_sided(
                lambda r, var=var: _crown._backward(net, env, example, var, r, relax), eye, None
            )
            patch = patch_bounds(net, env, example, *conv_chain(net, var), relax)
            out.append((full, patch))
        return out

    for full, patch in jax.jit(jax.vmap(both))(spec):
        np.testing.assert_allclose(patch.lower.reshape(full.lower.shape), full.lower, atol=2e-5)
        np.testing.assert_allclose(patch.upper.reshape(full.upper.shape), full.upper, atol=2e-5)


def test_only_convolution_chains_take_patches():
    apply_fn, params, shape = _networks()["nchw"]
    net = jc.trace(apply_fn, params, jnp.zeros((1, *shape)))
    first, second, scaled = (eq.inputs[0] for eq in net.activations())
    assert conv_chain(net, first) and conv_chain(net, second) and conv_chain(net, scaled)
    assert conv_chain(net, net.graph.output_var) is None  # a dense layer and a reshape

    def residual(p, x):
        dims = ("NHWC", "HWIO", "NHWC")
        h = lax.conv_general_dilated(x, p, (1, 1), "SAME", dimension_numbers=dims)
        return jax.nn.relu(h + x).reshape(x.shape[0], -1)

    net = jc.trace(residual, jnp.ones((3, 3, 2, 2)), jnp.zeros((1, 4, 4, 2)))
    assert conv_chain(net, net.activations()[0].inputs[0]) is None


def _two_convolutions(p, x):
    """Two padded 3x3 convolutions joined by a bias add only, a ReLU and a dense layer."""
    dims = ("NCHW", "OIHW", "NCHW")
    h = lax.conv_general_dilated(x, p["w1"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims)
    h = h + p["b1"][None, :, None, None]
    h = lax.conv_general_dilated(h, p["w2"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims)
    h = jax.nn.relu(h + p["b2"][None, :, None, None])
    return h.reshape(h.shape[0], -1) @ p["w3"] + p["b3"]


def test_two_padded_convolutions_joined_by_a_bias_are_not_certified_falsely():
    # Coefficients at padded positions leaked through the second transpose: CROWN gave +5.4
    # for a margin of -0.14 at a corner of the ball.
    rng = np.random.default_rng(3)
    shapes = {"w1": (2, 1, 3, 3), "b1": (2,), "w2": (2, 2, 3, 3), "b2": (2,), "w3": (50, 3)}
    p = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    p["b3"] = jnp.asarray(rng.normal(size=3), jnp.float32)
    x = jnp.asarray(rng.uniform(size=(1, 1, 5, 5)), jnp.float32)
    corners = jnp.clip(x + 0.01 * jnp.asarray(rng.choice([-1.0, 1.0], (2000, 1, 5, 5))), 0, 1)
    out = _two_convolutions(p, corners.astype(jnp.float32))
    y, j = 1, 2
    p["b3"] = p["b3"].at[j].add(jnp.min(out[:, y] - out[:, j]) + 0.14)  # reached margin -0.14
    net = jc.trace(_two_convolutions, p, x)
    spec = jc.LinfBall(x, 0.01)
    for method in ("crown", "alpha-crown"):
        assert float(jc.bounds.margins(net, spec, jnp.array([y]), method=method)[0, j]) <= -0.14
        assert not bool(jc.bounds.certify(net, spec, jnp.array([y]), method=method)[0])


class _SameChain(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 3), padding="SAME")(x)
        x = nn.Conv(3, (3, 3))(x)
        return nn.Dense(3)(jax.nn.relu(x).reshape(x.shape[0], -1))


def test_flax_same_padding_chain_is_sound():
    # 5 of these 8 models (seeds 0, 2, 3, 4, 6) got CROWN bounds above reached outputs.
    model = _SameChain()
    x = jax.random.uniform(jax.random.key(0), (4, 5, 5, 1))
    net = jc.trace(model.apply, model.init(jax.random.key(0), x), x[:1])
    spec = jc.LinfBall(x, 0.05)
    signs = jax.random.choice(jax.random.key(1), jnp.array([-0.05, 0.05]), (4, 300, 5, 5, 1))
    points = jnp.clip(x[:, None] + signs, 0, 1)
    for seed in range(8):
        params = model.init(jax.random.key(seed), x)
        bounds = jc.bounds.crown(
            jax.tree.unflatten(jax.tree.structure(net), jax.tree.leaves(params)), spec
        )
        out = jax.vmap(lambda v, params=params: model.apply(params, v))(points)
        assert jnp.all(bounds.lower[:, None] <= out) and jnp.all(out <= bounds.upper[:, None])
