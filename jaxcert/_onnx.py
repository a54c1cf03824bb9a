"""Importing ONNX networks as JAX classifiers, for VNN-COMP benchmarks and other exporters.

`from_onnx` turns an ONNX graph into ``apply_fn(params, x)`` written with `jax.numpy` and
`jax.lax`, so `jaxcert.trace` and every bound method read it like a Flax model. The operators
are those of feed-forward verification benchmarks (dense and convolutional networks with
input normalisation and the activations `jaxcert.trace` reads: Relu, LeakyRelu, Sigmoid, Tanh,
Clip, Abs, MaxPool, Max/Min); shape arithmetic that exporters emit (``x.view(x.size(0), -1)``
becomes Shape, Gather, Unsqueeze, Concat, Reshape) is folded to constants while the graph is
run.

VNN-COMP networks usually fix the batch dimension at 1, so `apply_fn` runs the graph on one
example at a time under `jax.vmap`: reshapes to ``[1, -1]`` stay correct for any batch.

The `onnx` package is needed only here: ``pip install 'jaxcert[onnx]'``.

References:
  ONNX operator specifications, https://onnx.ai/onnx/operators/; VNN-COMP benchmarks,
  https://github.com/ChristopherBrix/vnncomp_benchmarks.
"""

import functools
import gzip
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

if TYPE_CHECKING:
    import onnx


def from_onnx(source: "str | Path | onnx.ModelProto") -> tuple[Callable, dict[str, jax.Array]]:
    """Load an ONNX network as ``(apply_fn, params)``.

    Args:
      source: a path to a ``.onnx`` file (or a gzip-compressed ``.onnx.gz``, as VNN-COMP
        benchmark folders ship them), or an ``onnx.ModelProto``.

    Returns:
      ``(apply_fn, params)``: ``params`` maps the name of every floating-point initializer to a
      float32 array, and ``apply_fn(params, x)`` equals the ONNX graph on a batch ``x`` of shape
      ``(B, *input_shape)``, where ``input_shape`` is the graph input's shape without its leading
      batch dimension (a fixed 1 or symbolic); a graph input of rank 1 has no batch dimension,
      and ``x`` then has shape ``(B, n)``. The output has shape ``(B, *output_shape)``.
      ``apply_fn.input_shape`` is ``input_shape`` as a tuple (None for a symbolic dimension).

    Raises:
      ImportError: the `onnx` package is not installed.
      TypeError: `source` is neither a path nor a ModelProto.
      ValueError: a file that cannot be read as an ONNX model (missing, a directory, truncated,
        not ONNX, a corrupt gzip); naming every unsupported operator (or attribute, such as
        AveragePool's ``ceil_mode=1``) in the graph; a graph without exactly one input and one
        output, or one that reads a tensor no node defines. Errors about a file start with its
        path.
    """
    onnx = _import_onnx()
    if isinstance(source, onnx.ModelProto):
        return _convert(onnx, source)
    model = _load(onnx, source)
    try:
        return _convert(onnx, model)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _convert(onnx, model):
    """`from_onnx` of a ModelProto."""
    graph = model.graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"the ONNX graph must have one input and one output, it has {len(inputs)} inputs "
            f"({[i.name for i in inputs]}) and {len(graph.output)} outputs"
        )
    nodes = [_Node(onnx, node) for node in graph.node]
    _check_supported(nodes)
    _check_defined(nodes, {*constants, inputs[0].name}, graph.output[0].name)
    params = {
        name: jnp.asarray(value, jnp.float32)
        for name, value in constants.items()
        if np.issubdtype(value.dtype, np.floating)
    }
    static = {name: value for name, value in constants.items() if name not in params}
    dims = _dims(inputs[0])
    batched = len(dims) >= 2 and dims[0] in (1, None)
    example_shape = tuple(dims[1:] if batched else dims)
    input_name, output_name = inputs[0].name, graph.output[0].name

    def run(params, x):
        env = {**static, **params, input_name: x}
        for node in nodes:
            values = [env[name] if name else None for name in node.inputs]
            results = _OPS[node.op](node, *values)
            env.update(zip(node.outputs, results if isinstance(results, tuple) else (results,)))
        return jnp.asarray(env[output_name])

    def apply_fn(params, x):
        x = jnp.asarray(x)
        expected = tuple(d if d is not None else n for d, n in zip(example_shape, x.shape[1:]))
        if x.shape[1:] != expected:
            raise ValueError(f"x must have shape (batch, *{expected}), got {x.shape}")

        def one(xi):
            out = run(params, xi[None] if batched else xi)
            return out[0] if batched and out.ndim >= 1 and out.shape[0] == 1 else out

        return jax.vmap(one)(x.astype(jnp.float32))

    apply_fn.input_shape = example_shape
    return apply_fn, params


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "from_onnx needs the onnx package: pip install 'jaxcert[onnx]'"
        ) from error
    return onnx


def _load(onnx, source):
    """The ModelProto in a file; ValueError naming the file if it holds none."""
    from google.protobuf.message import DecodeError  # installed with onnx

    if not isinstance(source, str | Path):
        raise TypeError(
            f"source must be a path to an .onnx file or an onnx.ModelProto, got {type(source)}"
        )
    path = Path(source)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                model = onnx.load_model_from_string(f.read())
        else:
            model = onnx.load(path)
    except DecodeError:
        raise ValueError(f"{path}: cannot read an ONNX model: truncated, or not ONNX") from None
    except (OSError, EOFError, zlib.error) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ValueError(f"{path}: cannot read an ONNX model: {reason}") from None
    if not model.HasField("graph"):
        raise ValueError(f"{path}: cannot read an ONNX model: the file holds no graph")
    return model


def _dims(value_info):
    """The declared shape of a graph input; None for a symbolic or unknown dimension."""
    shape = value_info.type.tensor_type.shape
    if not value_info.type.tensor_type.HasField("shape"):
        raise ValueError(f"the ONNX graph input {value_info.name!r} has no declared shape")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


class _Node:
    """An ONNX node with its attributes read into Python values."""

    def __init__(self, onnx, node):
        self.op = node.op_type
        self.name = node.name or node.output[0]
        self.domain = node.domain
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "value" in self.attrs and isinstance(self.attrs["value"], onnx.TensorProto):
            self.attrs["value"] = onnx.numpy_helper.to_array(self.attrs["value"])
        if "to" in self.attrs:
            self.attrs["to"] = onnx.helper.tensor_dtype_to_np_dtype(self.attrs["to"])

    def get(self, name, default=None):
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value


def _check_supported(nodes):
    problems = []
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op not in _OPS:
            problems.append(f"{node.op} (node {node.name!r})")
        elif node.op == "AveragePool" and node.get("ceil_mode", 0):
            problems.append(f"AveragePool with ceil_mode=1 (node {node.name!r})")
        elif node.op == "AveragePool" and any(d != 1 for d in node.get("dilations", [])):
            problems.append(f"AveragePool with dilations (node {node.name!r})")
        elif node.op == "MaxPool" and node.get("ceil_mode", 0):
            problems.append(f"MaxPool with ceil_mode=1 (node {node.name!r})")
        elif node.op == "MaxPool" and len(node.outputs) > 1:
            problems.append(f"MaxPool with an Indices output (node {node.name!r})")
        elif node.op == "Pad" and node.get("mode", "constant") != "constant":
            problems.append(f"Pad with mode={node.get('mode')} (node {node.name!r})")
        elif node.op == "BatchNormalization" and node.get("training_mode", 0):
            problems.append(f"BatchNormalization in training mode (node {node.name!r})")
        elif (
            node.op == "Constant"
            and "value" not in node.attrs
            and not any(
                k in node.attrs for k in ("value_float", "value_floats", "value_int", "value_ints")
            )
        ):
            problems.append(f"Constant without a numeric value (node {node.name!r})")
        elif node.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            problems.append(f"{node.op} with auto_pad={node.get('auto_pad')} ({node.name!r})")
    if problems:
        raise ValueError(
            "unsupported ONNX operators: "
            + "; ".join(problems)
            + f". Supported: {', '.join(sorted(_OPS))}"
        )


def _check_defined(nodes, known, output):
    """Every tensor a node reads, and the graph output, is an input, initializer or earlier
    node output."""
    known = set(known)
    for node in nodes:
        missing = [name for name in node.inputs if name and name not in known]
        if missing:
            raise ValueError(f"node {node.name!r} ({node.op}) reads undefined tensors {missing}")
        known.update(node.outputs)
    if output not in known:
        raise ValueError(f"no node computes the graph output {output!r}")


def _xp(*values):
    """NumPy when every value is a constant (folded now), jax.numpy otherwise."""
    return np if all(isinstance(v, np.ndarray | np.generic) for v in values) else jnp


def _gemm(node, a, b, c=None):
    a = a.T if node.get("transA", 0) else a
    b = b.T if node.get("transB", 0) else b
    y = a @ b
    if node.get("alpha", 1.0) != 1.0:
        y = y * np.float32(node.get("alpha"))
    if c is not None:
        y = y + (c if node.get("beta", 1.0) == 1.0 else c * np.float32(node.get("beta")))
    return y


def _div(node, a, b):
    if _xp(a, b) is np and np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer division rounds toward zero
    return a / b


def _axes(node, axes_input):
    """Axes from the attribute (opset < 13) or the second input (opset >= 13)."""
    axes = node.get("axes") if axes_input is None else axes_input
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _squeeze(node, x, axes=None):
    axes = _axes(node, axes)
    return _xp(x).squeeze(x, axis=None if axes is None else tuple(axes))


def _unsqueeze(node, x, axes=None):
    axes = _axes(node, axes)
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = _xp(x).expand_dims(x, axis)
    return x


def _reshape(node, x, shape):
    shape = [int(s) for s in np.ravel(shape)]
    if not node.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return _xp(x).reshape(x, shape)


def _flatten(node, x):
    axis = node.get("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"Flatten node {node.name!r}: axis {axis} outside [-{x.ndim}, {x.ndim}]")
    axis = axis + x.ndim if axis < 0 else axis  # ONNX: a negative axis counts from the end
    return _xp(x).reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _constant(node):
    if "value" in node.attrs:
        return np.asarray(node.attrs["value"])
    if "value_float" in node.attrs:
        return np.asarray(node.attrs["value_float"], np.float32)
    if "value_floats" in node.attrs:
        return np.asarray(node.attrs["value_floats"], np.float32)
    if "value_int" in node.attrs:
        return np.asarray(node.attrs["value_int"], np.int64)
    return np.asarray(node.attrs["value_ints"], np.int64)


def _pads(node, spatial, kernel, strides, dilations):
    """Per-axis (before, after) padding from `pads` or `auto_pad`."""
    auto = node.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pairs.append((small, large) if auto == "SAME_UPPER" else (large, small))
        return pairs
    if auto == "VALID":
        return [(0, 0)] * len(spatial)
    pads = node.get("pads", [0] * 2 * len(spatial))
    return list(zip(pads[: len(spatial)], pads[len(spatial) :]))


def _conv(node, x, w, b=None):
    n = x.ndim - 2
    kernel = w.shape[2:]
    strides = node.get("strides", [1] * n)
    dilations = node.get("dilations", [1] * n)
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=_pads(node, x.shape[2:], kernel, strides, dilations),
        rhs_dilation=dilations,
        feature_group_count=node.get("group", 1),
    )
    return y if b is None else y + jnp.reshape(b, (1, -1) + (1,) * n)


def _batch_norm(node, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    factor = scale / jnp.sqrt(var + node.get("epsilon", 1e-5))
    return x * jnp.reshape(factor, shape) + jnp.reshape(bias - mean * factor, shape)


def _average_pool(node, x):
    n = x.ndim - 2
    kernel = node.get("kernel_shape")
    strides = node.get("strides", [1] * n)
    pads = _pads(node, x.shape[2:], kernel, strides, [1] * n)
    sums = lax.reduce_window(
        x, 0.0, lax.add, (1, 1, *kernel), (1, 1, *strides), ((0, 0), (0, 0), *pads)
    )
    if node.get("count_include_pad", 0) or not any(p for pair in pads for p in pair):
        return sums / np.float32(math.prod(kernel))
    # Divide each window by the number of real (unpadded) entries in it: separable per axis.
    counts = np.ones((), np.float32)
    for size, k, s, pair, out in zip(x.shape[2:], kernel, strides, pads, sums.shape[2:]):
        starts = np.arange(out) * s - pair[0]
        inside = np.clip(starts + k, 0, size) - np.clip(starts, 0, size)
        counts = np.multiply.outer(counts, inside.astype(np.float32))
    return sums / counts


def _max_pool(node, x):
    n = x.ndim - 2
    kernel = node.get("kernel_shape")
    strides = node.get("strides", [1] * n)
    dilations = node.get("dilations", [1] * n)
    pads = _pads(node, x.shape[2:], kernel, strides, dilations)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 1, *kernel), (1, 1, *strides), ((0, 0), (0, 0), *pads),
        window_dilation=(1, 1, *dilations),
    )  # fmt: skip


def _slice(node, x, starts=None, ends=None, axes=None, steps=None):
    """Static slicing; starts/ends/axes are attributes before opset 10, inputs after."""
    starts = node.get("starts") if starts is None else np.ravel(starts)
    ends = node.get("ends") if ends is None else np.ravel(ends)
    axes = node.get("axes", range(len(starts))) if axes is None else np.ravel(axes)
    steps = [1] * len(starts) if steps is None else np.ravel(steps)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis) % x.ndim] = slice(int(start), int(end), int(step))
    return x[tuple(index)]


def _pad(node, x, pads=None, value=None, axes=None):
    """Constant padding (negative pads crop); pads is an attribute before opset 11."""
    pads = [int(p) for p in np.ravel(node.get("pads") if pads is None else pads)]
    axes = range(x.ndim) if axes is None else [int(a) % x.ndim for a in np.ravel(axes)]
    config = [(0, 0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        config[axis] = (pads[i], pads[i + len(axes)], 0)
    value = node.get("value", 0.0) if value is None else value
    return lax.pad(x, jnp.asarray(value, x.dtype).reshape(()), config)


def _relu(node, x):
    return np.maximum(x, 0) if _xp(x) is np else jax.nn.relu(x)


def _leaky_relu(node, x):
    alpha = float(node.get("alpha", 0.01))
    return np.where(x >= 0, x, alpha * x) if _xp(x) is np else jax.nn.leaky_relu(x, alpha)


def _clip(node, x, low=None, high=None):
    """Bounds as optional inputs (opset >= 11) or as attributes min/max (before)."""
    low = node.get("min") if low is None else low
    high = node.get("max") if high is None else high
    xp = _xp(x)
    if low is not None:
        x = xp.maximum(x, xp.asarray(low, x.dtype))
    if high is not None:
        x = xp.minimum(x, xp.asarray(high, x.dtype))
    return x


def _elementwise(function):
    """A variadic elementwise node (Max, Min): `function` folded over its inputs."""

    def apply(node, *values):
        xp = _xp(*values)
        return functools.reduce(getattr(xp, function), values)

    return apply


def _gather(node, data, indices):
    axis = node.get("axis", 0) % np.ndim(data)
    if _xp(data, indices) is np or not isinstance(indices, np.ndarray | np.generic):
        return _xp(data, indices).take(data, indices, axis=axis)
    # Constant indices into a traced tensor: static slices, which the bound methods read.
    size = data.shape[axis]
    if np.any((indices < -size) | (indices >= size)):
        raise ValueError(f"Gather node {node.name!r}: indices outside [-{size}, {size - 1}]")
    starts = [int(i) % size for i in indices.flat]
    rows = [lax.slice_in_dim(data, i, i + 1, axis=axis) for i in starts]
    picked = jnp.concatenate(rows, axis=axis) if rows else jnp.take(data, indices, axis=axis)
    return jnp.reshape(picked, data.shape[:axis] + np.shape(indices) + data.shape[axis + 1 :])


def _concat(node, *values):
    return _xp(*values).concatenate(values, axis=node.get("axis"))


def _cast(node, x):
    return x.astype(node.get("to"))


def _dropout(node, x, *_):
    return (x, np.ones(np.shape(x), bool)) if len(node.outputs) > 1 else x


def _transpose(node, x):
    return _xp(x).transpose(x, node.get("perm", list(range(x.ndim))[::-1]))


_OPS = {
    "Abs": lambda node, x: _xp(x).abs(x),
    "Add": lambda node, a, b: a + b,
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "Clip": _clip,
    "Concat": _concat,
    "Constant": _constant,
    "Conv": _conv,
    "Div": _div,
    "Dropout": _dropout,
    "Flatten": _flatten,
    "Gather": _gather,
    "Gemm": _gemm,
    "Identity": lambda node, x: x,
    "LeakyRelu": _leaky_relu,
    "MatMul": lambda node, a, b: _xp(a, b).matmul(a, b),
    "Max": _elementwise("maximum"),
    "MaxPool": _max_pool,
    "Min": _elementwise("minimum"),
    "Mul": lambda node, a, b: a * b,
    "Neg": lambda node, x: -x,
    "Pad": _pad,
    "Relu": _relu,
    "Reshape": _reshape,
    "Sigmoid": lambda node, x: 1 / (1 + np.exp(-x)) if _xp(x) is np else jax.nn.sigmoid(x),
    "Shape": lambda node, x: np.asarray(np.shape(x), np.int64)[
        slice(node.get("start", 0), node.get("end"))
    ],
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Sub": lambda node, a, b: a - b,
    "Tanh": lambda node, x: _xp(x).tanh(x),
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
}
