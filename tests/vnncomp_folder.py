"""A small VNN-COMP benchmark folder with answers known from oracles outside jaxcert.

`make_benchmark(folder)` writes ONNX networks (built with `onnx.helper`), VNN-LIB properties and
an ``instances.csv``, and returns the expected result of each instance:

* ``identity``: a network whose output 0 exceeds output 1 by at least 2 by construction, with a
  robustness property ("Y_0 is not the maximum" is unsafe): ``unsat``.
* ``acas``: a 5-16-16-5 MLP on an ACAS-Xu-shaped input (1x1x1x5, normalised by Sub and Div,
  flattened), with ACAS-style properties "Y_0 >= c": ``sat`` when c is just below the output at the
  box's centre, ``unsat`` when c exceeds an interval bound computed in plain NumPy. One is gzipped.
* ``tiny2d``: a 2-8-8-3 MLP where a 2001 x 2001 grid plus a Lipschitz bound brackets the true
  maximum of Y_0 - Y_1 over the box: thresholds just below it are ``sat``, just above ``unsat``
  (the second needs more than CROWN); a two-box property is ``sat`` through its second box, and
  so is one that pairs each box with its own threshold.
* ``cnn``: a small convolutional network on 8x8 digits with robustness properties at two radii;
  no oracle decides these, so they are expected to be consistent (a sat answer's counterexample
  is checked by the tests), not a given answer.

`make_slow_benchmark(folder)` writes a folder for the runner's time limits: an instance with a
1 s limit on a convolutional network wide enough that computing its bounds alone (compiling
included) takes longer, then two on the ``identity`` network with ample limits.

Run as a script to write the folder: ``python tests/vnncomp_folder.py DIR``.
"""

import gzip
import re
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from jaxcert.data import load_digits


def _model(nodes, inits, input_shape, output_shape):
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _mlp_nodes(first, layers):
    """Gemm/Relu nodes from `first` through `layers` [(W, b)], ending in "y"."""
    nodes, inits, name = [], {}, first
    for i, (w, b) in enumerate(layers):
        out = "y" if i == len(layers) - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [name, f"W{i}", f"b{i}"], [out + "_pre"], transB=1))
        inits[f"W{i}"], inits[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        if out == "y":
            nodes[-1].output[0] = "y"
        else:
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        name = out
    return nodes, inits


def mlp_forward(layers, x):
    """The plain NumPy forward pass of `_mlp_nodes` on a batch of flat inputs."""
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        x = np.maximum(x, 0) if i < len(layers) - 1 else x
    return x


def _random_layers(rng, sizes):
    return [
        (rng.normal(size=(m, n)) / np.sqrt(n), rng.normal(size=m) * 0.1)
        for n, m in zip(sizes[:-1], sizes[1:])
    ]


def _interval_upper(layers, lower, upper, row):
    """An upper bound on row . f(x) over the box by interval arithmetic in NumPy (an oracle
    independent of jaxcert)."""
    for i, (w, b) in enumerate(layers):
        center, radius = (lower + upper) / 2, (upper - lower) / 2
        center, radius = w @ center + b, np.abs(w) @ radius
        lower, upper = center - radius, center + radius
        if i < len(layers) - 1:
            lower, upper = np.maximum(lower, 0), np.maximum(upper, 0)
    return float(np.maximum(row, 0) @ upper + np.minimum(row, 0) @ lower)


def _identity_model():
    """y0 = x0 + x1 + 2, y1 = x0 - x1: on [0, 1]^2, y0 - y1 = 2 x1 + 2 >= 2 > 0."""
    layers = [(np.eye(2), np.zeros(2)), (np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([2.0, 0]))]
    return _model(*_mlp_nodes("x", layers), [1, 2], [1, 2])


def _property(boxes, n_out, unsafe):
    """A VNN-LIB text: declarations, the input boxes (a disjunction if several) and the unsafe
    output constraint; with a list `unsafe`, box i is paired with its own constraint unsafe[i]."""
    n_in = len(boxes[0][0])
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    bounds = [
        " ".join(f"(>= X_{i} {lo!r}) (<= X_{i} {hi!r})" for i, (lo, hi) in enumerate(zip(*box)))
        for box in boxes
    ]
    if isinstance(unsafe, list):
        pairs = " ".join(f"(and {b} {u})" for b, u in zip(bounds, unsafe))
        return "\n".join([*lines, f"(assert (or {pairs}))"]) + "\n"
    if len(boxes) == 1:
        lines += [f"(assert {atom})" for atom in re.findall(r"\([^()]*\)", bounds[0])]
    else:
        lines.append("(assert (or " + " ".join(f"(and {b})" for b in bounds) + "))")
    lines.append(f"(assert {unsafe})")
    return "\n".join(lines) + "\n"


def _robustness(label, n_out):
    """Unsafe: some other output is at least Y_label."""
    others = [f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label]
    return "(or " + " ".join(others) + ")"


def make_benchmark(folder):
    """Write the benchmark under `folder`; returns {(onnx, vnnlib): expected result or None}."""
    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "vnnlib").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    expected, lines = {}, []

    def add(onnx_name, prop_name, text, answer, timeout=120, compress=False):
        prop_name = prop_name + (".gz" if compress else "")
        path = folder / "vnnlib" / prop_name
        path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
        key = (f"onnx/{onnx_name}", f"vnnlib/{prop_name}")
        expected[key] = answer
        lines.append(f"{key[0]},{key[1]},{timeout}")

    _save(folder / "onnx/identity.onnx", _identity_model())
    unit = [([0.0, 0.0], [1.0, 1.0])]
    add("identity.onnx", "robust.vnnlib", _property(unit, 2, _robustness(0, 2)), "unsat")

    # acas: ACAS-Xu layout, input normalisation, Flatten.
    acas = _random_layers(rng, (5, 16, 16, 5))
    mean, std = rng.normal(size=5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)
    nodes, inits = _mlp_nodes("flat", acas)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Flatten", ["scaled"], ["flat"]),
        *nodes,
    ]
    inits.update(mean=mean.reshape(1, 1, 1, 5), std=std.reshape(1, 1, 1, 5))
    _save(folder / "onnx/acas.onnx.gz", _model(nodes, inits, [1, 1, 1, 5], [1, 5]), gz=True)
    lower, upper = mean - 0.1, mean + 0.1  # around the normalisation centre
    n_lower, n_upper = (lower - mean) / std, (upper - mean) / std
    centre = float(mlp_forward(acas, (((lower + upper) / 2 - mean) / std)[None])[0, 0])
    bound = _interval_upper(acas, n_lower, n_upper, np.eye(5)[0])
    box = [(lower.tolist(), upper.tolist())]
    add("acas.onnx.gz", "acas_sat.vnnlib", _property(box, 5, f"(>= Y_0 {centre - 1e-3!r})"), "sat")
    add("acas.onnx.gz", "acas_unsat.vnnlib", _property(box, 5, f"(>= Y_0 {bound + 0.1!r})"),
        "unsat", compress=True)  # fmt: skip

    # tiny2d: the grid brackets max (Y_0 - Y_1) over [-1, 1]^2 to within L h / 2.
    tiny = _random_layers(rng, (2, 8, 8, 3))
    nodes, inits = _mlp_nodes("x", tiny)
    _save(folder / "onnx/tiny2d.onnx", _model(nodes, inits, [1, 2], [1, 3]))
    ticks = np.linspace(-1, 1, 2001)
    grid = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    out = mlp_forward(tiny, grid)
    top = float(np.max(out[:, 0] - out[:, 1]))
    slope = np.abs(np.array([1.0, -1.0, 0.0]))
    for w, _ in reversed(tiny):
        slope = slope @ np.abs(w)
    slack = float(slope.sum() * (ticks[1] - ticks[0]) / 2) + 1e-4
    box = [([-1.0, -1.0], [1.0, 1.0])]
    below = f"(>= (- Y_0 Y_1) {top - 1e-3!r})"
    above = f"(>= (- Y_0 Y_1) {top + slack!r})"
    add("tiny2d.onnx", "tiny_sat.vnnlib", _property(box, 3, below), "sat")
    add("tiny2d.onnx", "tiny_unsat.vnnlib", _property(box, 3, above), "unsat")
    argmax = grid[np.argmax(out[:, 0] - out[:, 1])].tolist()
    far = [([-1.0, -1.0], [-0.9, -0.9]), ([a - 1e-3 for a in argmax], [a + 1e-3 for a in argmax])]
    add("tiny2d.onnx", "tiny_two_boxes.vnnlib", _property(far, 3, below), "sat")
    pairs = [box[0], far[1]], [above, below]  # unsat on the whole box, sat near the maximiser
    add("tiny2d.onnx", "tiny_paired.vnnlib", _property(*pairs[:1], 3, pairs[1]), "sat")

    # cnn: Sub/Div normalisation, Conv, Relu, AveragePool, Flatten, Gemm, Relu, Gemm on 8x8.
    images, _ = load_digits("test")  # (N, 8, 8, 1) in [0, 1], bundled with jaxcert
    w1 = rng.normal(size=(4, 1, 3, 3)).astype(np.float32) / 3
    w2 = rng.normal(size=(32, 64)).astype(np.float32) / 8
    w3 = rng.normal(size=(10, 32)).astype(np.float32) / 6
    nodes = [
        helper.make_node("Sub", ["x", "pixel_mean"], ["c"]),
        helper.make_node("Div", ["c", "pixel_std"], ["n"]),
        helper.make_node("Conv", ["n", "w1", "b1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["d"], transB=1),
        helper.make_node("Relu", ["d"], ["r2"]),
        helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], transB=1),
    ]
    inits = dict(
        pixel_mean=np.array(0.3, np.float32), pixel_std=np.array(0.4, np.float32),
        w1=w1, b1=np.zeros(4, np.float32), w2=w2, b2=np.zeros(32, np.float32),
        w3=w3, b3=np.zeros(10, np.float32),
    )  # fmt: skip
    cnn = _model(nodes, inits, [1, 1, 8, 8], [1, 10])
    _save(folder / "onnx/cnn.onnx", cnn)
    import onnxruntime

    session = onnxruntime.InferenceSession(
        cnn.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for i in range(2):
        image = images[i].ravel()
        label = int(np.argmax(session.run(None, {"x": image.reshape(1, 1, 8, 8)})[0]))
        for eps in (0.005, 0.2):
            box = [(np.clip(image - eps, 0, 1).tolist(), np.clip(image + eps, 0, 1).tolist())]
            add("cnn.onnx", f"cnn_img{i}_eps{eps}.vnnlib",
                _property(box, 10, _robustness(label, 10)), None)  # fmt: skip

    (folder / "instances.csv").write_text("\n".join(lines) + "\n")
    return expected


def make_slow_benchmark(folder):
    """Write the slow benchmark under `folder`; returns its (onnx, vnnlib, timeout) lines."""
    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "vnnlib").mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    width, side = 32, 16
    w1 = rng.normal(size=(width, 3, 3, 3)).astype(np.float32) / 5
    w2 = rng.normal(size=(width, width, 3, 3)).astype(np.float32) / 17
    w3 = rng.normal(size=(10, width * side * side)).astype(np.float32) / 90
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["y"], transB=1),
    ]
    inits = dict(w1=w1, b1=np.zeros(width, np.float32), w2=w2,
                 b2=np.zeros(width, np.float32), w3=w3, b3=np.zeros(10, np.float32))  # fmt: skip
    _save(folder / "onnx/wide_cnn.onnx", _model(nodes, inits, [1, 3, side, side], [1, 10]))
    image = rng.uniform(size=3 * side * side)
    box = [(np.clip(image - 0.01, 0, 1).tolist(), np.clip(image + 0.01, 0, 1).tolist())]
    (folder / "vnnlib/wide.vnnlib").write_text(_property(box, 10, _robustness(0, 10)))
    _save(folder / "onnx/identity.onnx", _identity_model())
    unit = [([0.0, 0.0], [1.0, 1.0])]
    (folder / "vnnlib/robust.vnnlib").write_text(_property(unit, 2, _robustness(0, 2)))
    (folder / "vnnlib/robust_too.vnnlib").write_text(_property(unit, 2, _robustness(0, 2)))
    lines = [("onnx/wide_cnn.onnx", "vnnlib/wide.vnnlib", 1.0)]
    lines += [("onnx/identity.onnx", f"vnnlib/{n}.vnnlib", 120.0) for n in ("robust", "robust_too")]
    (folder / "instances.csv").write_text("".join(f"{a},{b},{t}\n" for a, b, t in lines))
    return lines


def _save(path, model, gz=False):
    raw = model.SerializeToString()
    path.write_bytes(gzip.compress(raw) if gz else raw)


if __name__ == "__main__":
    for key, answer in make_benchmark(sys.argv[1]).items():
        print(*key, answer or "(no oracle)")
