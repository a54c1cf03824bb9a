import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcert import models

MLP_SPEC = {"kind": "mlp", "hidden": [32, 16], "num_classes": 10}
CNN_SPEC = {"kind": "cnn", "channels": [8, 16], "dense": 32, "num_classes": 10}


@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC])
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1)])
def test_output_shapes(spec, input_shape):
    apply_fn, params = models.init_model(spec, jax.random.key(0), input_shape)
    assert set(params) == {"params"}
    logits = apply_fn(params, jnp.zeros((3, *input_shape)))
    assert logits.shape == (3, 10)
    assert logits.dtype == jnp.float32


def test_cnn_default_layers():
    model = models.build_model({"kind": "cnn"})
    assert isinstance(model, models.CNN)
    assert model.channels == (16, 32) and model.dense == 100 and model.num_classes == 10
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    # Two stride-2 3x3 convolutions: 28x28 -> 14x14 -> 7x7 with 32 channels.
    assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 16)
    assert params["Dense_0"]["kernel"].shape == (7 * 7 * 32, 100)


def test_mlp_matches_numpy_forward():
    apply_fn, params = models.init_model(MLP_SPEC, jax.random.key(1), (8, 8, 1))
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    layers = params["params"]
    h = x.reshape(4, -1).astype(np.float64)
    for name in ("Dense_0", "Dense_1"):
        h = np.maximum(h @ np.asarray(layers[name]["kernel"]) + np.asarray(layers[name]["bias"]), 0)
    expected = h @ np.asarray(layers["Dense_2"]["kernel"]) + np.asarray(layers["Dense_2"]["bias"])
    np.testing.assert_allclose(apply_fn(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC])
def test_save_load_roundtrip(tmp_path, spec):
    apply_fn, params = models.init_model(spec, jax.random.key(2), (8, 8, 1))
    metadata = {"sigma": 0.25, "dataset": "digits", "accuracy": 0.9}
    target = tmp_path / "nested" / "model"
    models.save_model(target, spec, params, input_shape=(8, 8, 1), metadata=metadata)
    assert json.loads((target / "model.json").read_text())["metadata"] == metadata
    loaded_fn, loaded_params, info = models.load_model(target)
    assert info["spec"] == spec and info["input_shape"] == [8, 8, 1]
    assert info["metadata"] == metadata
    x = np.random.default_rng(1).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded_fn(loaded_params, x), apply_fn(params, x))


def test_load_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        models.load_model(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="params.msgpack"):
        models.load_model(tmp_path)


def test_load_refuses_files_that_do_not_describe_the_model(tmp_path):
    _, params = models.init_model(MLP_SPEC, jax.random.key(0), (8, 8, 1))
    models.save_model(tmp_path, MLP_SPEC, params, input_shape=(8, 8, 1))
    other = {**MLP_SPEC, "hidden": [32, 17]}  # a spec the saved parameters do not fit
    (tmp_path / "model.json").write_text(json.dumps({"spec": other, "input_shape": [8, 8, 1]}))
    shapes = r"does not match .*Dense_1.*bias.*\(16,\), the spec gives \(17,\)"
    with pytest.raises(ValueError, match=shapes):
        models.load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="model.json is not a model description"):
        models.load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"spec": MLP_SPEC}))
    with pytest.raises(ValueError, match="input_shape"):
        models.load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"spec": MLP_SPEC, "input_shape": [8, 8, 1]}))
    (tmp_path / "params.msgpack").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="params.msgpack does not hold the parameters"):
        models.load_model(tmp_path)


def test_content_hash_tells_models_apart():
    _, params = models.init_model(MLP_SPEC, jax.random.key(0), (8, 8, 1))
    digest = models.content_hash(MLP_SPEC, (8, 8, 1), params)
    assert len(digest) == 64
    assert models.content_hash(MLP_SPEC, [8, 8, 1], jax.tree.map(np.array, params)) == digest
    nudged = jax.tree.map(lambda p: p, params)
    nudged["params"]["Dense_2"]["bias"] = params["params"]["Dense_2"]["bias"].at[3].add(1e-7)
    assert models.content_hash(MLP_SPEC, (8, 8, 1), nudged) != digest
    assert models.content_hash({**MLP_SPEC, "num_classes": 10}, (8, 8, 1), params) == digest
    assert models.content_hash(MLP_SPEC, (64, 1, 1), params) != digest


class _NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.out = nnx.Linear(8 * 8 * 4, 10, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        return self.out(h.reshape(h.shape[0], -1))


def test_from_nnx_matches_module_under_jit():
    module = _NnxNet(nnx.Rngs(0))
    apply_fn, params = models.from_nnx(module)
    x = np.random.default_rng(2).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(apply_fn)(params, x), module(x), rtol=1e-6, atol=1e-6)
    # Parameters are an argument, not closed over: zero parameters give zero logits.
    zeros = jax.tree.map(jnp.zeros_like, params)
    np.testing.assert_array_equal(jax.jit(apply_fn)(zeros, x), np.zeros((3, 10)))
    with pytest.raises(TypeError, match="nnx.Module"):
        models.from_nnx(object())


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "resnet"}, "'mlp' or 'cnn'"),
        ({"hidden": [4]}, "'mlp' or 'cnn'"),
        ({"kind": "mlp"}, "'hidden' is required"),
        ({"kind": "mlp", "hidden": [4, 0]}, "hidden\\[1\\]"),
        ({"kind": "mlp", "hidden": "64"}, "list of positive integers"),
        ({"kind": "mlp", "hidden": [4], "dense": 3}, "unknown spec fields \\['dense'\\]"),
        ({"kind": "cnn", "channels": []}, "must not be empty"),
        ({"kind": "cnn", "dense": 2.5}, "'dense' must be a positive integer"),
        ({"kind": "cnn", "num_classes": True}, "'num_classes'"),
    ],
)
def test_bad_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        models.build_model(spec)


def test_spec_must_be_dict():
    with pytest.raises(TypeError, match="spec must be a dict"):
        models.build_model([("kind", "mlp")])
