"""ONNX import (`jaxcert.from_onnx`): every operator against onnxruntime, files, errors, bounds.

Each model is built by hand with `onnx.helper` (a leading batch axis of one, as exporters
write), checked with `onnx.checker`, run by onnxruntime one example at a time and compared with
the imported `apply_fn` on a batch of three. The traced network (`jaxcert.trace`) must equal it
too, and the bound methods must be sound on an imported CNN.
"""

import gzip

import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sampling import sample_set  # noqa: E402

import jaxcert as jc  # noqa: E402

BATCH = 3


# --------------------------------------------------------------------------- helpers


def _session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about initializers listed as inputs
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run_ort(model, x):
    """onnxruntime on one input array (the graph's only input), returning the first output."""
    session = _session(model)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _tensor(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _make_model(
    nodes, input_shape, inits=None, opset=13, *, inits_as_inputs=False, output_shape=True
):
    """A one-input ("x"), one-output ("y") model; the output gets the shape onnxruntime computes.

    `inits` maps initializer names to numpy arrays (float32 weights, int64 shapes and axes).
    With `inits_as_inputs` the initializers are also listed as graph inputs (older exporters).
    """
    inits = inits or {}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)
    extra = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for name, v in inits.items()
    ]
    graph = helper.make_graph(
        nodes,
        "test",
        [x, *(extra if inits_as_inputs else [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[_tensor(name, v) for name, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if output_shape:
        probe = np.zeros([d if isinstance(d, int) else 1 for d in input_shape], np.float32)
        dims = list(_run_ort(model, probe).shape)
        if input_shape and isinstance(input_shape[0], str):
            dims[0] = input_shape[0]
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, dims))
    onnx.checker.check_model(model, full_check=True)
    return model


def _inputs(input_shape, seed=0):
    """A batch of BATCH random inputs; the ONNX batch axis (1 or symbolic) becomes BATCH."""
    rng = np.random.default_rng(seed)
    if len(input_shape) >= 2 or isinstance(input_shape[0], str) or input_shape[0] == 1:
        one = [d for d in input_shape[1:]]
    else:  # rank-1 input without a batch axis
        one = list(input_shape)
    return rng.normal(size=(BATCH, *one)).astype(np.float32)


def _ort_batch(model, x):
    """onnxruntime one example at a time, the results stacked along a new batch axis.

    As `from_onnx` documents, a graph with a batch axis runs on ``x[i : i + 1]`` and its output
    loses a leading axis of one (an output such as Flatten(axis=-1)'s (6, 4) keeps its shape).
    """
    rank = len(model.graph.input[0].type.tensor_type.shape.dim)
    if rank == x.ndim:  # the graph has a batch axis of one (or a symbolic one)
        outs = [_run_ort(model, x[i : i + 1]) for i in range(len(x))]
        return np.stack([out[0] if out.ndim and out.shape[0] == 1 else out for out in outs])
    return np.stack([_run_ort(model, x[i]) for i in range(len(x))])


def _assert_matches_onnxruntime(model, x, tol=1e-5, source=None):
    apply_fn, params = jc.from_onnx(model if source is None else source)
    expected = _ort_batch(model, x)
    got = np.asarray(apply_fn(params, jnp.asarray(x)))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    return apply_fn, params, got


def _w(rng, *shape, scale=0.5):
    return (scale * rng.normal(size=shape)).astype(np.float32)


def _i64(*values):
    return np.asarray(values, np.int64)


# --------------------------------------------------------------------------- operator cases
# Each case returns (model, tolerance). Every network is tiny.


def _gemm_transb(rng):
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)
    return _make_model([node], [1, 4], {"W": _w(rng, 3, 4), "b": _w(rng, 3)}), 1e-5


def _gemm_alpha_beta(rng):
    node = helper.make_node("Gemm", ["x", "W", "c"], ["y"], alpha=0.5, beta=2.0)
    return _make_model([node], [1, 4], {"W": _w(rng, 4, 3), "c": _w(rng, 1, 3)}), 1e-5


def _gemm_alpha_beta_transb(rng):
    node = helper.make_node("Gemm", ["x", "W", "c"], ["y"], alpha=-1.5, beta=0.25, transB=1)
    return _make_model([node], [1, 4], {"W": _w(rng, 3, 4), "c": _w(rng, 3)}), 1e-5


def _gemm_transa_after_transpose(rng):
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("Gemm", ["xt", "W", "b"], ["y"], transA=1),
    ]
    return _make_model(nodes, [1, 4], {"W": _w(rng, 4, 3), "b": _w(rng, 3)}), 1e-5


def _gemm_without_bias(rng):
    node = helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)
    return _make_model([node], [1, 4], {"W": _w(rng, 3, 4)}), 1e-5


def _gemm_symbolic_batch(rng):
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)
    return _make_model([node], ["N", 4], {"W": _w(rng, 3, 4), "b": _w(rng, 3)}), 1e-5


def _mlp_gemm_relu_gemm(rng):
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1),
    ]
    inits = {"W1": _w(rng, 6, 4), "b1": _w(rng, 6), "W2": _w(rng, 3, 6), "b2": _w(rng, 3)}
    return _make_model(nodes, [1, 4], inits), 1e-5


def _initializers_listed_as_inputs(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y"]),
    ]
    inits = {"W": _w(rng, 4, 3), "b": _w(rng, 3)}
    return _make_model(nodes, [1, 4], inits, inits_as_inputs=True), 1e-5


def _matmul(rng):
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    return _make_model([node], [1, 4], {"W": _w(rng, 4, 3)}), 1e-5


def _matmul_3d(rng):
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    return _make_model([node], [1, 2, 4], {"W": _w(rng, 4, 3)}), 1e-5


def _add_constant_right_broadcast(rng):
    node = helper.make_node("Add", ["x", "c"], ["y"])
    return _make_model([node], [1, 3, 2, 2], {"c": _w(rng, 3, 1, 1)}), 1e-5


def _add_constant_left_broadcast(rng):
    node = helper.make_node("Add", ["c", "x"], ["y"])
    return _make_model([node], [1, 3, 2, 2], {"c": _w(rng, 2, 2)}), 1e-5


def _add_residual(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["y"]),
    ]
    return _make_model(nodes, [1, 4], {"W": _w(rng, 4, 4)}), 1e-5


def _sub_constant_right(rng):
    node = helper.make_node("Sub", ["x", "c"], ["y"])
    return _make_model([node], [1, 3, 2, 2], {"c": _w(rng, 3, 1, 1)}), 1e-5


def _sub_constant_left(rng):
    node = helper.make_node("Sub", ["c", "x"], ["y"])
    return _make_model([node], [1, 3, 2, 2], {"c": _w(rng, 3, 1, 1)}), 1e-5


def _mul_constant_right(rng):
    node = helper.make_node("Mul", ["x", "c"], ["y"])
    return _make_model([node], [1, 3, 2, 2], {"c": _w(rng, 3, 1, 1)}), 1e-5


def _mul_scalar_constant_left(rng):
    node = helper.make_node("Mul", ["c", "x"], ["y"])
    return _make_model([node], [1, 3, 2], {"c": np.float32(-1.75)}), 1e-5


def _div_constant_vector(rng):
    """Input normalisation (x - mean) / std with per-channel constants."""
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["y"]),
    ]
    inits = {
        "mean": np.asarray([0.5, 0.4, 0.3], np.float32).reshape(3, 1, 1),
        "std": np.asarray([0.25, 0.5, 2.0], np.float32).reshape(1, 3, 1, 1),
    }
    return _make_model(nodes, [1, 3, 2, 2], inits), 1e-5


def _div_constant_last_axis(rng):
    node = helper.make_node("Div", ["x", "d"], ["y"])
    return _make_model([node], [1, 4], {"d": np.asarray([2.0, -0.5, 4.0, 0.3], np.float32)}), 1e-5


def _relu(rng):
    return _make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 6]), 1e-5


def _conv_pads_strides(rng):
    node = helper.make_node(
        "Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
    )
    inits = {"W": _w(rng, 3, 2, 3, 3), "b": _w(rng, 3)}
    return _make_model([node], [1, 2, 5, 5], inits), 1e-4


def _conv_asymmetric_pads(rng):
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], pads=[1, 0, 0, 2], strides=[1, 2])
    inits = {"W": _w(rng, 2, 2, 2, 3), "b": _w(rng, 2)}
    return _make_model([node], [1, 2, 4, 5], inits), 1e-4


def _conv_group_2(rng):
    node = helper.make_node(
        "Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2
    )
    inits = {"W": _w(rng, 6, 2, 3, 3), "b": _w(rng, 6)}
    return _make_model([node], [1, 4, 4, 4], inits), 1e-4


def _conv_dilations(rng):
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    inits = {"W": _w(rng, 2, 2, 2, 2), "b": _w(rng, 2)}
    return _make_model([node], [1, 2, 6, 6], inits), 1e-4


def _conv_auto_pad_same_upper(rng):
    # Input 6, kernel 3, stride 2: output 3, total padding 1, all of it at the end (SAME_UPPER).
    node = helper.make_node(
        "Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
    )
    inits = {"W": _w(rng, 3, 2, 3, 3), "b": _w(rng, 3)}
    return _make_model([node], [1, 2, 6, 6], inits), 1e-4


def _conv_1d(rng):
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], pads=[1, 2], strides=[2])
    return _make_model([node], [1, 2, 7], {"W": _w(rng, 3, 2, 3), "b": _w(rng, 3)}), 1e-4


def _conv_without_bias(rng):
    node = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[2, 2])
    return _make_model([node], [1, 2, 4, 4], {"W": _w(rng, 3, 2, 2, 2)}), 1e-4


def _batchnorm_after_conv(rng):
    nodes = [
        helper.make_node("Conv", ["x", "W", "b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["h", "scale", "shift", "mean", "var"], ["y"], epsilon=1e-3
        ),
    ]
    inits = {
        "W": _w(rng, 3, 2, 3, 3),
        "b": _w(rng, 3),
        "scale": _w(rng, 3) + 1.0,
        "shift": _w(rng, 3),
        "mean": _w(rng, 3),
        "var": rng.uniform(0.5, 2.0, 3).astype(np.float32),
    }
    return _make_model(nodes, [1, 2, 4, 4], inits), 1e-4


def _batchnorm_after_gemm(rng):
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "scale", "shift", "mean", "var"], ["y"]),
    ]
    inits = {
        "W": _w(rng, 3, 4),
        "b": _w(rng, 3),
        "scale": _w(rng, 3) + 1.0,
        "shift": _w(rng, 3),
        "mean": _w(rng, 3),
        "var": rng.uniform(0.5, 2.0, 3).astype(np.float32),
    }
    return _make_model(nodes, [1, 4], inits), 1e-5


def _avgpool(count_include_pad):
    def case(rng):
        node = helper.make_node(
            "AveragePool",
            ["x"],
            ["y"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=count_include_pad,
        )
        return _make_model([node], [1, 2, 5, 5]), 1e-5

    return case


def _avgpool_asymmetric_pads_excluded(rng):
    node = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[2, 3], pads=[0, 1, 1, 0], count_include_pad=0
    )
    return _make_model([node], [1, 2, 4, 4]), 1e-5


def _avgpool_without_pads(rng):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    return _make_model([node], [1, 2, 4, 4]), 1e-5


def _flatten_default_axis(rng):
    return _make_model([helper.make_node("Flatten", ["x"], ["y"])], [1, 2, 3, 2]), 1e-5


def _flatten_axis_1_of_3d(rng):
    return _make_model([helper.make_node("Flatten", ["x"], ["y"], axis=1)], [1, 3, 4]), 1e-5


def _flatten_after_transpose(axis):
    """Flatten at every axis, negative ones counted from the end (rank + axis)."""

    def case(rng):
        nodes = [
            helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Flatten", ["t"], ["y"], axis=axis),
        ]
        return _make_model(nodes, [1, 2, 3, 4]), 1e-5

    return case


def _reshape(shape):
    def case(rng):
        node = helper.make_node("Reshape", ["x", "shape"], ["y"])
        return _make_model([node], [1, 2, 3, 4], {"shape": _i64(*shape)}), 1e-5

    return case


def _transpose(rng):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["t"], ["f"]),
        helper.make_node("MatMul", ["f", "W"], ["y"]),
    ]
    return _make_model(nodes, [1, 2, 3, 2], {"W": _w(rng, 12, 3)}), 1e-5


def _transpose_alone(rng):
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])
    return _make_model([node], [1, 2, 3, 4]), 1e-5


def _constant_feeding_add(rng):
    nodes = [
        helper.make_node("Constant", [], ["c"], value=_tensor("c", _w(rng, 3))),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    return _make_model(nodes, [1, 3]), 1e-5


def _constant_value_float_feeding_mul(rng):
    nodes = [
        helper.make_node("Constant", [], ["c"], value_float=0.3),
        helper.make_node("Mul", ["x", "c"], ["y"]),
    ]
    return _make_model(nodes, [1, 3]), 1e-5


def _identity(rng):
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["y"]),
    ]
    return _make_model(nodes, [1, 5]), 1e-5


def _dropout(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Dropout", ["h"], ["y"]),
    ]
    return _make_model(nodes, [1, 4], {"W": _w(rng, 4, 3)}), 1e-5


def _unsqueeze_opset_11(rng):
    node = helper.make_node("Unsqueeze", ["x"], ["y"], axes=[2, 4])
    return _make_model([node], [1, 3, 2], opset=11), 1e-5


def _squeeze_opset_11(rng):
    node = helper.make_node("Squeeze", ["x"], ["y"], axes=[2])
    return _make_model([node], [1, 3, 1, 2], opset=11), 1e-5


def _unsqueeze_opset_13(rng):
    node = helper.make_node("Unsqueeze", ["x", "axes"], ["y"])
    return _make_model([node], [1, 3, 2], {"axes": _i64(-1, 1)}), 1e-5


def _squeeze_opset_13(rng):
    node = helper.make_node("Squeeze", ["x", "axes"], ["y"])
    return _make_model([node], [1, 3, 1, 2, 1], {"axes": _i64(2, -1)}), 1e-5


def _flatten_chain(opset):
    """x.view(x.size(0), -1) as PyTorch exports it: Shape, Gather, (Cast,) Unsqueeze, Concat."""

    def case(rng):
        if opset < 13:
            unsqueeze = helper.make_node("Unsqueeze", ["n64"], ["n1"], axes=[0])
            inits = {}
        else:
            unsqueeze = helper.make_node("Unsqueeze", ["n64", "zero_axis"], ["n1"])
            inits = {"zero_axis": _i64(0)}
        nodes = [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Constant", [], ["i0"], value=_tensor("i0", np.int64(0))),
            helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
            helper.make_node("Cast", ["n"], ["n64"], to=TensorProto.INT64),
            unsqueeze,
            helper.make_node("Constant", [], ["m1"], value=_tensor("m1", _i64(-1))),
            helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["y"], transB=1),
        ]
        inits.update({"W": _w(rng, 3, 12), "b": _w(rng, 3)})
        return _make_model(nodes, [1, 3, 2, 2], inits, opset=opset), 1e-5

    return case


def _rank_1_input(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    return _make_model(nodes, [5], {"W": _w(rng, 5, 3), "b": _w(rng, 3)}), 1e-5


def _slice_inputs(rng):
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Neg", ["s"], ["y"]),
    ]
    inits = {"starts": _i64(1, -1), "ends": _i64(3, -5), "axes": _i64(1, 3), "steps": _i64(1, -2)}
    return _make_model(nodes, [1, 4, 3, 6], inits), 1e-5


def _slice_opset_9_attributes(rng):
    node = helper.make_node("Slice", ["x"], ["y"], starts=[0, 1], ends=[2, 1000], axes=[1, 2])
    return _make_model([node], [1, 3, 4], opset=9), 1e-5


def _pad_constant_and_crop(rng):
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["p"]),
        helper.make_node("Conv", ["p", "w"], ["y"]),
    ]
    inits = {
        "pads": _i64(0, 0, 1, -1, 0, 0, 2, 1),  # begins then ends; -1 crops
        "value": np.float32(0.5),
        "w": _w(rng, 2, 2, 2, 2),
    }
    return _make_model(nodes, [1, 2, 4, 5], inits), 1e-4


def _pad_opset_2_attributes(rng):
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 2], value=-1.0)
    return _make_model([node], [1, 3], opset=2), 1e-5


def _activations(rng):
    """Every activation node between dense layers; Clip with its bounds as inputs."""
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"]),
        helper.make_node("Sigmoid", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "W2", "b2"], ["h2"]),
        helper.make_node("LeakyRelu", ["h2"], ["a2"], alpha=0.3),
        helper.make_node("Gemm", ["a2", "W3", "b3"], ["h3"]),
        helper.make_node("Tanh", ["h3"], ["a3"]),
        helper.make_node("Gemm", ["a3", "W4", "b4"], ["h4"]),
        helper.make_node("Clip", ["h4", "low", "high"], ["a4"]),
        helper.make_node("Abs", ["a4"], ["a5"]),
        helper.make_node("Max", ["a5", "floor"], ["a6"]),
        helper.make_node("Min", ["a6", "ceiling"], ["y"]),
    ]
    inits = {f"W{i}": _w(rng, 4, 4, scale=1.0) for i in range(1, 5)}
    inits |= {f"b{i}": _w(rng, 4) for i in range(1, 5)}
    inits |= {"low": np.float32(-0.3), "high": np.float32(0.5)}
    inits |= {"floor": _w(rng, 1, 4, scale=0.1), "ceiling": np.full((1, 4), 0.4, np.float32)}
    return _make_model(nodes, [1, 4], inits), 1e-5


def _clip_opset_6_attributes_and_default_leaky_slope(rng):
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["h"]),
        helper.make_node("Clip", ["h"], ["y"], min=-0.5, max=0.25),
    ]
    return _make_model(nodes, [1, 5], opset=6), 1e-5


def _max_pool(rng):
    """Padded, strided max pooling with kernel != stride, and a dilated one, after a Conv."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["h"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 0, 1, 1]),
        helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], dilations=[1, 2],
                         pads=[0, 1, 1, 1]),
    ]  # fmt: skip
    return _make_model(nodes, [1, 1, 6, 7], {"W": _w(rng, 2, 1, 3, 3)}), 1e-5


def _concat_with_a_constant(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Concat", ["h", "c", "x"], ["y"], axis=1),
    ]
    return _make_model(nodes, [1, 4], {"W": _w(rng, 4, 3), "c": _w(rng, 1, 2)}), 1e-5


def _concat_negative_axis(rng):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["r", "c", "x"], ["y"], axis=-3),
    ]
    return _make_model(nodes, [1, 2, 3, 2], {"c": _w(rng, 1, 1, 3, 2)}), 1e-5


def _gather_negative_axis_and_indices(rng):
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=-1)
    return _make_model([node], [1, 3, 4], {"i": _i64(-1, 0, -3)}), 1e-5


def _reshape_to_last_dim_from_shape(rng):
    """Reshape x to (-1, x.shape[-1]): Gather of a negative index into Shape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "last"], ["n"], axis=-1),
        helper.make_node("Unsqueeze", ["n", "zero_axis"], ["n1"]),
        helper.make_node("Concat", ["m1", "n1"], ["shape"], axis=-1),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = {"last": np.int64(-1), "zero_axis": _i64(0), "m1": _i64(-1)}
    return _make_model(nodes, [1, 2, 3, 4], inits), 1e-5


def _shape_negative_start_end(rng):
    """Shape with start=-2 (opset 15) read as numbers: x * shape[-2:] and x * shape[-2:-1]."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=-2),
        helper.make_node("Shape", ["x"], ["s1"], start=-2, end=-1),
        helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["s1"], ["f1"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "f"], ["m"]),
        helper.make_node("Mul", ["m", "f1"], ["y"]),
    ]
    return _make_model(nodes, [1, 3, 2], opset=15), 1e-5


def _squeeze_opset_11_negative(rng):
    node = helper.make_node("Squeeze", ["x"], ["y"], axes=[-2, 2])
    return _make_model([node], [1, 3, 1, 1, 2], opset=11), 1e-5


def _unsqueeze_opset_11_negative(rng):
    node = helper.make_node("Unsqueeze", ["x"], ["y"], axes=[-1, 1, -4])
    return _make_model([node], [1, 3, 2], opset=11), 1e-5


def _slice_negative_axes(rng):
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    inits = {"starts": _i64(-1, 0), "ends": _i64(-4, 2), "axes": _i64(-1, -3), "steps": _i64(-1, 1)}
    return _make_model([node], [1, 3, 2, 5], inits), 1e-5


def _pad_negative_axes(rng):
    node = helper.make_node("Pad", ["x", "pads", "value", "axes"], ["y"])
    inits = {"pads": _i64(1, 0, 2, 1), "value": np.float32(0.25), "axes": _i64(-1, -2)}
    return _make_model([node], [1, 2, 3], inits, opset=18), 1e-5


CASES = {
    "gemm_transB": _gemm_transb,
    "gemm_alpha_beta": _gemm_alpha_beta,
    "gemm_alpha_beta_transB": _gemm_alpha_beta_transb,
    "gemm_transA_after_transpose": _gemm_transa_after_transpose,
    "gemm_without_bias": _gemm_without_bias,
    "gemm_symbolic_batch": _gemm_symbolic_batch,
    "mlp_gemm_relu_gemm": _mlp_gemm_relu_gemm,
    "initializers_listed_as_inputs": _initializers_listed_as_inputs,
    "matmul": _matmul,
    "matmul_3d": _matmul_3d,
    "add_constant_right_broadcast": _add_constant_right_broadcast,
    "add_constant_left_broadcast": _add_constant_left_broadcast,
    "add_residual": _add_residual,
    "sub_constant_right": _sub_constant_right,
    "sub_constant_left": _sub_constant_left,
    "mul_constant_right": _mul_constant_right,
    "mul_scalar_constant_left": _mul_scalar_constant_left,
    "div_constant_vector_normalisation": _div_constant_vector,
    "div_constant_last_axis": _div_constant_last_axis,
    "relu": _relu,
    "conv_pads_strides": _conv_pads_strides,
    "conv_asymmetric_pads": _conv_asymmetric_pads,
    "conv_group_2": _conv_group_2,
    "conv_dilations": _conv_dilations,
    "conv_auto_pad_same_upper": _conv_auto_pad_same_upper,
    "conv_without_bias": _conv_without_bias,
    "conv_1d": _conv_1d,
    "batchnorm_after_conv": _batchnorm_after_conv,
    "batchnorm_after_gemm": _batchnorm_after_gemm,
    "avgpool_count_include_pad_0": _avgpool(0),
    "avgpool_count_include_pad_1": _avgpool(1),
    "avgpool_asymmetric_pads_excluded": _avgpool_asymmetric_pads_excluded,
    "avgpool_without_pads": _avgpool_without_pads,
    "flatten_default_axis": _flatten_default_axis,
    "flatten_axis_1_of_3d": _flatten_axis_1_of_3d,
    **{f"flatten_axis_{a}_after_transpose": _flatten_after_transpose(a) for a in range(-4, 5)},
    "reshape_0_minus_1": _reshape((0, -1)),
    "reshape_0_6_minus_1": _reshape((0, 6, -1)),
    "reshape_0_0_minus_1_2": _reshape((0, 0, -1, 2)),
    "reshape_batch_1_literal": _reshape((1, -1)),
    "transpose_then_flatten": _transpose,
    "transpose_alone": _transpose_alone,
    "constant_feeding_add": _constant_feeding_add,
    "constant_value_float_feeding_mul": _constant_value_float_feeding_mul,
    "identity": _identity,
    "dropout": _dropout,
    "unsqueeze_opset_11": _unsqueeze_opset_11,
    "squeeze_opset_11": _squeeze_opset_11,
    "unsqueeze_opset_13": _unsqueeze_opset_13,
    "squeeze_opset_13": _squeeze_opset_13,
    "flatten_chain_shape_gather_opset_11": _flatten_chain(11),
    "flatten_chain_shape_gather_opset_13": _flatten_chain(13),
    "flatten_chain_shape_gather_opset_17": _flatten_chain(17),
    "rank_1_input": _rank_1_input,
    "slice_inputs_negative_step_then_neg": _slice_inputs,
    "slice_opset_9_attributes": _slice_opset_9_attributes,
    "pad_constant_and_crop_then_conv": _pad_constant_and_crop,
    "pad_opset_2_attributes": _pad_opset_2_attributes,
    "activations": _activations,
    "max_pool": _max_pool,
    "clip_opset_6_attributes_and_default_leaky_slope": (
        _clip_opset_6_attributes_and_default_leaky_slope
    ),
    "concat_with_a_constant": _concat_with_a_constant,
    "concat_negative_axis": _concat_negative_axis,
    "gather_negative_axis_and_indices": _gather_negative_axis_and_indices,
    "reshape_to_last_dim_from_shape": _reshape_to_last_dim_from_shape,
    "shape_negative_start_end": _shape_negative_start_end,
    "squeeze_opset_11_negative": _squeeze_opset_11_negative,
    "unsqueeze_opset_11_negative": _unsqueeze_opset_11_negative,
    "slice_negative_axes": _slice_negative_axes,
    "pad_negative_axes": _pad_negative_axes,
}


def _case(name):
    return CASES[name](np.random.default_rng(sorted(CASES).index(name)))


@pytest.mark.parametrize("name", list(CASES))
def test_operator_matches_onnxruntime(name):
    model, tol = _case(name)
    input_shape = [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in model.graph.input[0].type.tensor_type.shape.dim
    ]
    x = _inputs(input_shape)
    apply_fn, params, out = _assert_matches_onnxruntime(model, x, tol)
    # The same function traces into a network the bound methods read, and that network agrees.
    net = jc.trace(apply_fn, params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))), out, rtol=tol, atol=tol)


def test_params_are_the_float_initializers():
    model, _ = _case("flatten_chain_shape_gather_opset_13")  # also has an int64 initializer
    _, params = jc.from_onnx(model)
    assert isinstance(params, dict)
    assert set(params) == {"W", "b"}
    for init in model.graph.initializer:
        if init.name in params:
            assert params[init.name].dtype == jnp.float32
            np.testing.assert_array_equal(
                np.asarray(params[init.name]), numpy_helper.to_array(init)
            )


def test_params_are_used_by_apply_fn():
    """apply_fn reads the weights from params, so new weights give new outputs."""
    model, _ = _case("gemm_transB")
    apply_fn, params = jc.from_onnx(model)
    x = jnp.asarray(_inputs([1, 4]))
    doubled = {k: 2 * v for k, v in params.items()}
    np.testing.assert_allclose(apply_fn(doubled, x), 2 * apply_fn(params, x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- files


def test_paths_and_gzip_give_the_same_network(tmp_path):
    model, tol = _case("batchnorm_after_conv")
    x = _inputs([1, 2, 4, 4], seed=1)
    plain = tmp_path / "net.onnx"
    plain.write_bytes(model.SerializeToString())
    packed = tmp_path / "net.onnx.gz"
    with gzip.open(packed, "wb") as f:
        f.write(model.SerializeToString())
    reference = _assert_matches_onnxruntime(model, x, tol)[2]
    for source in (plain, str(plain), packed, str(packed)):
        _, params, out = _assert_matches_onnxruntime(model, x, tol, source=source)
        np.testing.assert_array_equal(out, reference)
        assert set(params) == {"W", "b", "scale", "shift", "mean", "var"}


# --------------------------------------------------------------------------- errors


def _gzip_bytes(data):
    return gzip.compress(data, mtime=0)


_MODEL_BYTES = _make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 6]).SerializeToString()
_BAD_FILES = {
    "missing.onnx": (None, "No such file"),
    "truncated.onnx": (_MODEL_BYTES[: len(_MODEL_BYTES) // 2], "cannot read an ONNX model"),
    "text.onnx": (b"(declare-const X_0 Real)\n", "cannot read an ONNX model"),
    "empty.onnx": (b"", "holds no graph"),
    "not_gzip.onnx.gz": (_MODEL_BYTES, "Not a gzipped file"),
    "truncated.onnx.gz": (_gzip_bytes(_MODEL_BYTES)[:-12], "cannot read an ONNX model"),
    "text_in.onnx.gz": (_gzip_bytes(b"hello world\n"), "cannot read an ONNX model"),
}


@pytest.mark.parametrize("name", [*_BAD_FILES, "a_directory"])
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, name):
    path = tmp_path / name
    data, match = _BAD_FILES.get(name, (None, "Is a directory"))
    if name == "a_directory":
        path.mkdir()
    elif data is not None:
        path.write_bytes(data)
    for source in (path, str(path)):
        with pytest.raises(ValueError, match=match) as info:
            jc.from_onnx(source)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message


def test_errors_about_a_file_start_with_its_path(tmp_path):
    model = _make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 6])
    model.graph.node.append(helper.make_node("Erf", ["y"], ["z"]))
    path = tmp_path / "net.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=f"^{path}: unsupported ONNX operators: Erf"):
        jc.from_onnx(path)


def test_a_tensor_that_no_node_defines_is_named():
    model = _make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 6])
    model.graph.node[0].input[0] = "lost"
    with pytest.raises(ValueError, match="reads undefined tensors \\['lost'\\]"):
        jc.from_onnx(model)
    model.graph.node[0].input[0] = "x"
    model.graph.output[0].name = "nowhere"
    with pytest.raises(ValueError, match="graph output 'nowhere'"):
        jc.from_onnx(model)


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("Erf", {}),
        ("Softmax", {"axis": 1}),
    ],
)
def test_unsupported_operator_is_named(op, attrs):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node(op, ["r"], ["y"], **attrs),
    ]
    model = _make_model(nodes, [1, 2, 4, 4])
    with pytest.raises(ValueError, match=op):
        jc.from_onnx(model)


@pytest.mark.parametrize(
    "node, inits, match",
    [
        (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                          ceil_mode=1), {}, "ceil_mode"),
        (helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"),
         {"pads": _i64(0, 0, 1, 1, 0, 0, 1, 1)}, "mode=reflect"),
    ],
)  # fmt: skip
def test_unsupported_attributes_are_refused(node, inits, match):
    model = _make_model([node], [1, 2, 5, 5], inits)
    with pytest.raises(ValueError, match=match):
        jc.from_onnx(model)


def test_two_inputs_are_refused():
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    ones = np.ones((1, 3), np.float32)
    session = _session(model)
    np.testing.assert_array_equal(session.run(None, {"x": ones, "z": ones})[0], 2 * ones)
    with pytest.raises(ValueError):
        jc.from_onnx(model)


# --------------------------------------------------------------------------- bounds


def _small_cnn():
    """Normalisation, Conv, BatchNorm, ReLU, AveragePool, Flatten, Gemm, ReLU, Gemm."""
    rng = np.random.default_rng(42)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node(
            "Conv", ["normed", "W1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mu", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "W2", "b2"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r2"]),
        helper.make_node("Gemm", ["r2", "W3", "b3"], ["y"], transB=1),
    ]
    inits = {
        "mean": np.asarray([0.4, 0.6], np.float32).reshape(1, 2, 1, 1),
        "std": np.asarray([0.3, 0.2], np.float32).reshape(1, 2, 1, 1),
        "W1": _w(rng, 4, 2, 3, 3, scale=0.3),
        "b1": _w(rng, 4, scale=0.1),
        "scale": _w(rng, 4, scale=0.2) + 1.0,
        "shift": _w(rng, 4, scale=0.1),
        "mu": _w(rng, 4, scale=0.1),
        "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "W2": _w(rng, 10, 36, scale=1 / 6),
        "b2": _w(rng, 10, scale=0.1),
        "W3": _w(rng, 3, 10, scale=1 / np.sqrt(10)),
        "b3": _w(rng, 3, scale=0.1),
    }
    return _make_model(nodes, [1, 2, 6, 6], inits)


@pytest.mark.slow
def test_bounds_of_an_imported_cnn_are_sound():
    model = _small_cnn()
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, (2, 2, 6, 6)).astype(np.float32)
    apply_fn, params, out = _assert_matches_onnxruntime(model, x, 1e-4)
    net = jc.trace(apply_fn, params, jnp.asarray(x))
    spec = jc.LinfBall(jnp.asarray(x), 0.05)
    crown = jc.bounds.crown(net, spec)
    ibp = jc.bounds.ibp(net, spec)
    for bounds in (crown, ibp):
        assert bounds.lower.shape == bounds.upper.shape == (2, 3)
    for i in range(len(x)):
        points = sample_set("linf", x[i], 0.05, 2000, seed=i)
        outputs = np.asarray(apply_fn(params, jnp.asarray(points)))
        assert outputs.shape == (2000, 3)
        for bounds in (crown, ibp):
            assert np.all(outputs >= np.asarray(bounds.lower[i]) - 1e-5)
            assert np.all(outputs <= np.asarray(bounds.upper[i]) + 1e-5)
    # The bounds are not vacuous: CROWN is finite and at least as tight as IBP on average.
    assert np.all(np.isfinite(np.asarray(crown.lower))) and np.all(
        np.isfinite(np.asarray(crown.upper))
    )
    assert np.mean(crown.upper - crown.lower) <= np.mean(ibp.upper - ibp.lower) + 1e-6
