"""Shared noise through the first affine layers (`jaxcert.smoothing._affine_prefix`): counts
against a float64 NumPy loop over the key's own noise rows, on networks of several shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert as jc
from jaxcert.smoothing._affine_prefix import split

pytestmark = pytest.mark.usefixtures("either_x64")  # with jax_enable_x64 off and on

SIGMA = 0.3
NUM = 600


def _residual_apply(params, x):
    """The input itself is read again after the first activation."""
    flat = x.reshape(x.shape[0], -1)
    hidden = jax.nn.relu(flat @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + flat @ params["skip"]


def _residual_params(key, size, width, classes):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (size, width)) / np.sqrt(size),
        "b1": jnp.full((width,), 0.1),
        "w2": jax.random.normal(k2, (width, classes)) / np.sqrt(width),
        "skip": jax.random.normal(k3, (size, classes)) / np.sqrt(size),
    }


def _net(kind):
    """(apply_fn, params, input shape, a float64 NumPy forward pass on flat inputs)."""
    if kind == "residual":
        params = _residual_params(jax.random.key(0), 12, 16, 4)
        p = {k: np.asarray(v, np.float64) for k, v in params.items()}

        def forward(h):
            return np.maximum(h @ p["w1"] + p["b1"], 0) @ p["w2"] + h @ p["skip"]

        return _residual_apply, params, (12,), forward
    specs = {
        "mlp": {"kind": "mlp", "hidden": [24, 16], "num_classes": 4},
        "cnn": {"kind": "cnn", "channels": [3, 4], "dense": 10, "num_classes": 4},
    }
    spec = specs[kind]
    shape = (6, 6, 1)
    apply_fn, params = jc.models.init_model(spec, jax.random.key(0), shape)
    wide = jax.tree.map(lambda v: np.asarray(v, np.float64), params)

    def forward(h):  # the model itself in float64
        with jax.enable_x64(True):
            return np.asarray(apply_fn(wide, jnp.asarray(h).reshape(-1, *shape)))

    return apply_fn, params, shape, forward


@pytest.mark.parametrize("kind", ["mlp", "cnn", "residual"])
def test_shared_noise_counts_match_a_float64_loop_over_the_rows(kind):
    """Counts with the prefix folded equal a float64 loop over the same noise rows, except on
    samples within 1e-4 of a tie (rounding decides those)."""
    apply_fn, params, shape, forward = _net(kind)
    x = jax.random.uniform(jax.random.key(1), (5, *shape))
    assert split(apply_fn, params, x) is not None  # folded
    key = jax.random.key(7)
    counts = jc.smoothing.sample_counts(
        apply_fn, params, x, key, sigma=SIGMA, num=NUM, num_classes=4, shared_noise=True,
        batch_size=250,
    )
    size = int(np.prod(shape))
    rows = np.asarray(jc.smoothing.NOISES["gaussian"].rows(key, 0, NUM, size, x.dtype))
    for i, image in enumerate(np.asarray(x).reshape(len(x), -1)):  # noisy inputs in x's dtype
        noisy = (image + rows.dtype.type(SIGMA) * rows).astype(np.float64)
        logits = forward(noisy)
        want = np.bincount(logits.argmax(axis=1), minlength=4)
        top2 = np.sort(logits, axis=1)[:, -2:]
        near_ties = int(np.sum(top2[:, 1] - top2[:, 0] < 1e-4))
        assert np.abs(np.asarray(counts[i]) - want).sum() <= 2 * near_ties, (i, counts[i], want)
        assert counts[i].sum() == NUM


def test_the_cut_holds_what_the_rest_of_the_network_reads():
    """An MLP is cut after its first dense layer; a residual network also keeps the input."""
    apply_fn, params, shape, _ = _net("mlp")
    cut = split(apply_fn, params, jnp.zeros((1, *shape)))
    assert [e.primitive.name for e in cut.prefix].count("dot_general") == 1
    assert len(cut.cut) == 1 and cut.cut[0].shape == (1, 24)
    apply_fn, params, shape, _ = _net("residual")
    cut = split(apply_fn, params, jnp.zeros((1, *shape)))
    assert {v.shape for v in cut.cut} == {(1, 12), (1, 16)}


def _softmax_apply(params, x):
    return jax.nn.softmax(x.reshape(x.shape[0], -1) @ params["w"])


def _relu_first_apply(params, x):
    return jax.nn.relu(x.reshape(x.shape[0], -1)) @ params["w"]


@pytest.mark.parametrize("apply_fn", [_softmax_apply, _relu_first_apply])
def test_networks_that_cannot_be_cut_are_evaluated_as_they_are(apply_fn):
    """No cut for an operation the tracer refuses (softmax) or with no product before the first
    activation; shared noise then gives the counts of apply_fn on the summed inputs."""
    params = {"w": jax.random.normal(jax.random.key(3), (4, 3))}
    x = jax.random.uniform(jax.random.key(4), (3, 4))
    assert split(apply_fn, params, x) is None
    key = jax.random.key(5)
    counts = jc.smoothing.sample_counts(apply_fn, params, x, key, sigma=SIGMA, num=200,
                                        num_classes=3, shared_noise=True)  # fmt: skip
    rows = jc.smoothing.NOISES["gaussian"].rows(key, 0, 200, 4, x.dtype)
    for i in range(len(x)):
        predictions = np.asarray(jnp.argmax(apply_fn(params, x[i] + SIGMA * rows), axis=1))
        np.testing.assert_array_equal(counts[i], np.bincount(predictions, minlength=3))
