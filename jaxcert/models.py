"""Small classifiers, JSON architecture specs, and saving and loading trained models.

A classifier is ``apply_fn(params, x) -> logits`` with a leading batch axis on ``x``. For the Flax
linen models here ``apply_fn`` is ``model.apply`` and ``params`` the full variables dict
``{"params": ...}``; `from_nnx` adapts a flax.nnx module to the same convention.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

_SPEC_FILE = "model.json"
_PARAMS_FILE = "params.msgpack"

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky-relu": jax.nn.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}
"""The hidden activations the models offer, by the name a spec or `--activation` gives."""


class MLP(nn.Module):
    """Fully connected network on flattened inputs.

    Attributes:
        hidden: widths of the hidden layers (empty for a linear classifier).
        num_classes: number of output logits.
        activation: the hidden activation, a key of `ACTIVATIONS`.
    """

    hidden: tuple[int, ...]
    num_classes: int = 10
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Convolutional network on NHWC images.

    Each convolution has a square kernel (3x3 by default) and ``"SAME"`` padding, and halves the
    height and width (rounding up), by its stride of 2 or, with ``pool="max"``, by a 2x2 max
    pooling after it (stride 1): two layers map 8x8 digits to 2x2 and 28x28 MNIST to 7x7. The
    feature map is then flattened and passed through one hidden dense layer.

    Attributes:
        channels: output channels of the convolutions, one per layer.
        dense: width of the hidden dense layer.
        kernel: side of the convolution kernels.
        num_classes: number of output logits.
        activation: the hidden activation, a key of `ACTIVATIONS`.
        pool: how each layer halves the feature map: "stride" or "max" (2x2 max pooling).
    """

    channels: tuple[int, ...] = (16, 32)
    dense: int = 100
    kernel: int = 3
    num_classes: int = 10
    activation: str = "relu"
    pool: str = "stride"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        stride = 2 if self.pool == "stride" else 1
        for features in self.channels:
            x = nn.Conv(features, (self.kernel, self.kernel), strides=stride, padding="SAME")(x)
            x = act(x)
            if self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape(x.shape[0], -1)
        x = act(nn.Dense(self.dense)(x))
        return nn.Dense(self.num_classes)(x)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"spec field {name!r} must be a positive integer, got {value!r}")
    return value


def _widths(value: Any, name: str, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"spec field {name!r} must be a list of positive integers, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"spec field {name!r} must not be empty")
    return tuple(_positive_int(v, f"{name}[{i}]") for i, v in enumerate(value))


def build_model(spec: dict) -> nn.Module:
    """Builds a linen module from a JSON-able architecture spec.

    Specs are ``{"kind": "mlp", "hidden": [64, 64], "num_classes": 10}`` or
    ``{"kind": "cnn", "channels": [16, 32], "dense": 100, "num_classes": 10}``, either with an
    optional ``"activation"`` (a key of `ACTIVATIONS`, default ``"relu"``); every field other
    than ``kind`` and the MLP's ``hidden`` is optional and defaults as in `MLP` and `CNN`.

    Args:
        spec: the architecture spec.

    Returns:
        The `MLP` or `CNN` module (unbound; initialize it with `init_model`).
    """
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict, got {type(spec).__name__}")
    kind = spec.get("kind")
    fields = {k: v for k, v in spec.items() if k != "kind"}
    allowed = {
        "mlp": {"hidden", "num_classes", "activation"},
        "cnn": {"channels", "dense", "kernel", "num_classes", "activation", "pool"},
    }
    if kind not in allowed:
        raise ValueError(f"spec field 'kind' must be 'mlp' or 'cnn', got {kind!r}")
    unknown = set(fields) - allowed[kind]
    if unknown:
        raise ValueError(
            f"unknown spec fields {sorted(unknown)} for kind {kind!r}; "
            f"allowed: {sorted(allowed[kind])}"
        )
    if "num_classes" in fields:
        fields["num_classes"] = _positive_int(fields["num_classes"], "num_classes")
    if fields.get("pool", "stride") not in ("stride", "max"):
        raise ValueError(f"spec field 'pool' must be 'stride' or 'max', got {fields['pool']!r}")
    if fields.get("activation", "relu") not in ACTIVATIONS:
        raise ValueError(
            f"spec field 'activation' must be one of {sorted(ACTIVATIONS)}, "
            f"got {fields['activation']!r}"
        )
    if kind == "mlp":
        if "hidden" not in fields:
            raise ValueError("spec field 'hidden' is required for kind 'mlp'")
        fields["hidden"] = _widths(fields["hidden"], "hidden", allow_empty=True)
        return MLP(**fields)
    if "channels" in fields:
        fields["channels"] = _widths(fields["channels"], "channels", allow_empty=False)
    for name in ("dense", "kernel"):
        if name in fields:
            fields[name] = _positive_int(fields[name], name)
    return CNN(**fields)


def init_model(spec: dict, key: jax.Array, input_shape: Sequence[int]) -> tuple[Callable, Any]:
    """Builds a model from its spec and initializes its parameters.

    Args:
        spec: the architecture spec (see `build_model`).
        key: a ``jax.random`` key (new-style or legacy uint32).
        input_shape: shape of one input without the batch axis, e.g. ``(8, 8, 1)``.

    Returns:
        ``(apply_fn, params)``: the module's ``apply`` and its variables dict ``{"params": ...}``.
    """
    model = build_model(spec)
    params = model.init(key, jnp.zeros((1, *input_shape), jnp.float32))
    return model.apply, params


def save_model(
    path: str | Path,
    spec: dict,
    params: Any,
    *,
    input_shape: Sequence[int],
    metadata: dict | None = None,
) -> None:
    """Saves a linen model as a directory holding ``model.json`` and ``params.msgpack``.

    Args:
        path: the directory; it is created if needed and existing files in it are overwritten.
        spec: the architecture spec (see `build_model`).
        params: the variables dict ``{"params": ...}``.
        input_shape: shape of one input without the batch axis, needed to rebuild the model.
        metadata: optional JSON-able extras, e.g. training sigma, dataset, accuracy.

    Returns:
        None.
    """
    build_model(spec)
    info = {"spec": spec, "input_shape": [int(d) for d in input_shape], "metadata": metadata or {}}
    text = json.dumps(info, indent=2)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / _SPEC_FILE).write_text(text + "\n")
    (path / _PARAMS_FILE).write_bytes(serialization.to_bytes(params))


def load_model(path: str | Path) -> tuple[Callable, Any, dict]:
    """Loads a model saved by `save_model`.

    Args:
        path: the directory written by `save_model`.

    Returns:
        ``(apply_fn, params, info)``: the module's ``apply``, its variables dict, and the parsed
        ``model.json`` (keys ``spec``, ``input_shape`` and ``metadata``).
    """
    path = Path(path)
    spec_path, params_path = path / _SPEC_FILE, path / _PARAMS_FILE
    for file in (spec_path, params_path):
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: a saved model is a directory holding "
                f"{_SPEC_FILE} and {_PARAMS_FILE} (written by jaxcert.models.save_model)"
            )
    try:
        info = json.loads(spec_path.read_text())
        spec, input_shape = info["spec"], info["input_shape"]
        info.setdefault("metadata", {})
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"{spec_path} is not a model description: a JSON object with 'spec' and "
            f"'input_shape' is expected ({err!r})"
        ) from None
    if not isinstance(input_shape, list) or not all(
        isinstance(d, int) and d >= 1 for d in input_shape
    ):
        raise ValueError(f"{spec_path}: input_shape must be a list of positive integers")
    try:
        apply_fn, template = init_model(spec, jax.random.key(0), input_shape)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{spec_path}: {err}") from None
    try:
        params = serialization.from_bytes(template, params_path.read_bytes())
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"{params_path} does not hold the parameters of the model in {_SPEC_FILE} ({err})"
        ) from None
    for (where, want), got in zip(
        jax.tree_util.tree_leaves_with_path(template), jax.tree.leaves(params)
    ):
        if jnp.shape(got) != jnp.shape(want):
            raise ValueError(
                f"{params_path} does not match the architecture in {_SPEC_FILE}: "
                f"{jax.tree_util.keystr(where)} has shape {jnp.shape(got)}, "
                f"the spec gives {jnp.shape(want)}"
            )
    return apply_fn, jax.tree.map(jnp.asarray, params), info


def content_hash(spec: dict, input_shape: Sequence[int], params: Any) -> str:
    """A SHA-256 hex digest of a model's architecture and parameter values.

    Two models get the same hash exactly when their specs, input shapes, and parameter trees
    (paths, dtypes, shapes and bytes of every leaf) are equal; the path it was loaded from and
    its metadata do not count. Result logs record it so that a resume with another model is
    refused.

    Args:
        spec: the architecture spec (see `build_model`).
        input_shape: shape of one input without the batch axis.
        params: the parameters.

    Returns:
        The digest, 64 hexadecimal characters.
    """
    digest = hashlib.sha256()
    header = {"spec": spec, "input_shape": [int(d) for d in input_shape]}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for where, leaf in jax.tree_util.tree_leaves_with_path(params):
        value = np.asarray(leaf)
        described = f"{jax.tree_util.keystr(where)}:{value.dtype.str}:{value.shape}"
        digest.update(described.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def from_nnx(module: nnx.Module) -> tuple[Callable, Any]:
    """Adapts a flax.nnx module to the ``apply_fn(params, x)`` convention.

    The module is split into a static graph definition and a state pytree; ``apply_fn`` merges
    them back on each call, so the parameters are an ordinary argument and ``apply_fn`` can be
    jitted or differentiated with respect to them. Put modules with dropout or batch statistics
    in evaluation mode first: state updates made during a call are discarded.

    Args:
        module: the nnx module, called as ``module(x) -> logits``.

    Returns:
        ``(apply_fn, params)`` where ``params`` is the module's ``nnx.State``.
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
    graphdef, state = nnx.split(module)

    def apply_fn(params: nnx.State, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params)(x)

    return apply_fn, state
