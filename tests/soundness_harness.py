"""A soundness harness that generates architectures, not only weights.

Two checks, each driven by one integer seed so that every failure can be rebuilt on its own:

* `check_architecture(seed)`: a random network (a DAG of dense layers and convolutions with
  every padding, stride, dilation and feature-group option the tracer accepts, linear layers
  back to back, convolutions joined by only a bias add/sub/negation or nothing, residual adds,
  average pooling, inference batch norm, reshapes, ReLUs written three ways, or a Flax linen
  model) is bounded by every method and relaxation option of `jaxcert.bounds` over l_inf, l2 and
  l1 balls with and without the data box; every bound must contain the network's float64 value
  at dense samples of the set (uniform points, corners, sphere points, signed basis vectors)
  and at the iterates of a short PGD towards each bounded quantity.
* `check_exact(seed)`: a tiny MLP or CNN (<= 12 ReLUs); its exact minimum margin over an
  l_inf or l1 ball intersected with [0, 1] is found by enumerating ReLU activation patterns
  (one SciPy HiGHS linear program per feasible region, float64), the output bias is optionally
  shifted to put that minimum within 1e-5 of zero, and `jaxcert.exact.verify` must agree, with
  each strategy (the MILP, branch and bound with activation splits, BaBSR or for odd seeds
  filtered smart branching, and with input splits for l_inf balls of at most 16 inputs):
  "verified" only if the minimum is > 0, "falsified" only with a counterexample inside the set
  that the model misclassifies, anything else only near zero.

Run by hand: `python tests/soundness_harness.py --architectures 2000 --exact 500` prints a JSON
summary (counts, violations and wrong answers with the seed that rebuilds each); `--only-arch`
and `--only-exact` rerun single seeds. `--out results.jsonl` keeps every report as it comes and
resumes a stopped run; `--cache DIR` keeps compiled operations for the workers and later runs.
The library's functions are compiled (default) or, with `--eager`, run op by op under
`jax.disable_jit()`; with the cache, compiling was 1.7 times faster on the same six seeds.
"""

import argparse
import contextlib
import itertools
import json
import math
import os
import sys
import time
import traceback

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax import lax

import jaxcert as jc

# Sizes come from short menus, so that consecutive architectures share most tensor shapes and
# reuse the operations JAX compiled for earlier ones (a compile costs tens of ms; most checks
# run op by op).
CLASSES = (2, 3, 5)
INPUT_SIZES = (3, 8)  # of flat inputs
IMAGE_SIDES = (5, 8)
IMAGE_CHANNELS = (1, 3)
WIDTHS = (3, 6, 10)  # of dense layers
RELU_FORMS = ("nn", "max", "max0first")  # jax.nn.relu(h), jnp.maximum(h, 0), jnp.maximum(0, h)
# Other activations, each one activation equation (so intermediate bounds stay aligned): drawn
# for about a third of the architectures (not the exact cases, whose oracle enumerates ReLUs).
ACTIVATION_FORMS = ("leaky", "leaky-steep", "sigmoid", "tanh", "abs", "max-c", "min-c")
RELU_OPTIONS = tuple(itertools.product(("adaptive", "same-slope", "zero", "one"), ("crown", "ibp")))
SET_KINDS = ("linf", "l2", "l1")
MARGIN_METHODS = ("ibp", "crown", "crown-ibp", "alpha-crown", "lp")
ALPHA_STEPS = 3
PGD_STEPS = 8
SAMPLES = 192  # sampled points per example and set, besides the PGD iterates
TOLERANCE = 1e-5  # bounds are float32: a value may exceed one by TOLERANCE * (1 + |value|)
NEAR_ZERO = 1e-3  # exact minima closer to zero than this may be left undecided
NEAR_SHIFTS = (1e-5, 3e-6, 1e-6, 3e-7)  # where exact cases put their minimum margin (+-)
EXACT_SOLVERS = ("highs", "scip")
RACE_EVERY = 25  # one exact case in this many uses the default solver race (guarded)
# What check_exact runs (input splits: l_inf balls of at most 16 inputs).
STRATEGIES = ("milp", "bab-relu", "bab-input")
BAB_LIMIT = 30  # seconds per branch and bound run


# ---------------------------------------------------------------------------------------------
# Architectures: a list of operations on tensors, applied by plain JAX (or a Flax linen model).
# Tensor 0 is the input; op i reads tensors by index and appends tensor i + 1.


class Architecture:
    """A generated network: ops, float32 parameters, centres, and an apply function."""

    def __init__(self, seed, ops, params, x, num_classes, layout, flax_model=None):
        self.seed, self.ops, self.params, self.x = seed, ops, params, x
        self.num_classes, self.layout, self.flax_model = num_classes, layout, flax_model

    def apply(self, params, x, relu=None):
        """The logits; `relu(index, h, form)`, if given, replaces every activation (index in
        trace order)."""
        if self.flax_model is not None:
            return self.flax_model.apply(params, x)
        return _run(self.ops, params, x, self.layout, relu)

    def describe(self):
        if self.flax_model is not None:
            return "flax: " + " ".join(op[0] for op in self.ops)
        return " ".join(_describe(op) for op in self.ops)


def _describe(op):
    kind, attrs = op[0], op[2] if len(op) > 2 else {}
    if kind == "conv":
        keys = ("k", "out", "stride", "padding", "dil", "lhs", "groups", "bias")
        return "conv(" + ",".join(f"{k}={attrs[k]}" for k in keys if k in attrs) + ")"
    if kind == "relu":
        return f"relu[{attrs['form']}]"
    if kind == "add":
        return f"add(t{op[1][0]},t{op[1][1]})"
    return kind + ("(" + ",".join(f"{k}={v}" for k, v in attrs.items()) + ")" if attrs else "")


def _dimension_numbers(layout):
    return ("NCHW", "OIHW", "NCHW") if layout == "NCHW" else ("NHWC", "HWIO", "NHWC")


def _channel_shape(layout, ndim, c):
    """Shape for a per-channel constant broadcast against a batch of rank `ndim`."""
    if ndim == 2:
        return (c,)
    return (c, 1, 1) if layout == "NCHW" else (c,)


def _relu(form, h):
    """The activation of a "relu" op (named for the ReLU forms, the most common)."""
    others = {
        "leaky": lambda: jax.nn.leaky_relu(h, 0.1),
        "leaky-steep": lambda: jax.nn.leaky_relu(h, 1.7),  # concave
        "sigmoid": lambda: jax.nn.sigmoid(h),
        "tanh": lambda: jnp.tanh(h),
        "abs": lambda: jnp.abs(h),
        "max-c": lambda: jnp.maximum(h, 0.3),
        "min-c": lambda: jnp.minimum(h, 0.5),
    }
    if form in others:
        return others[form]()
    if form == "nn":
        return jax.nn.relu(h)
    if form == "max":
        return jnp.maximum(h, 0.0)
    return jnp.maximum(0.0, h)


def _run(ops, params, x, layout, relu=None, start=0):
    """Apply ops[start:] to x, the value of tensor `start` (ops from there on sequential)."""
    values = [x]
    count = itertools.count()
    for i, op in enumerate(ops[start:], start):
        kind, src, attrs = op
        h = values[src[0] - start]
        p = params.get(f"op{i}", {})
        if kind == "conv":
            h = lax.conv_general_dilated(
                h, p["w"], (attrs["stride"],) * 2, attrs["padding"],
                lhs_dilation=(attrs["lhs"],) * 2, rhs_dilation=(attrs["dil"],) * 2,
                dimension_numbers=_dimension_numbers(layout),
                feature_group_count=attrs["groups"],
            )  # fmt: skip
            if "b" in p:
                h = h + p["b"]
        elif kind == "dense":
            h = h @ p["w"] + p["b"] if "b" in p else jnp.dot(h, p["w"])
        elif kind == "bias":
            h = h + p["b"]
        elif kind == "subbias":
            h = h - p["b"]
        elif kind == "neg":
            h = -h
        elif kind == "scale":
            h = h * p["s"]
        elif kind == "relu":
            index = next(count)
            h = _relu(attrs["form"], h) if relu is None else relu(index, h, attrs["form"])
        elif kind == "add":
            h = h + values[src[1] - start]
        elif kind == "pool":
            k, s = attrs["k"], attrs["s"]
            w, s = ((1, 1, k, k), (1, 1, s, s)) if layout == "NCHW" else ((1, k, k, 1),) * 2
            if layout == "NHWC":
                s = (1, attrs["s"], attrs["s"], 1)
            h = lax.reduce_window(h, 0.0, lax.add, w, s, attrs["padding"]) / k**2
        elif kind == "bn":
            h = (h - p["mean"]) / jnp.sqrt(p["var"] + 1e-5) * p["gamma"] + p["beta"]
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif kind == "transpose":
            h = jnp.transpose(h, (0, 2, 3, 1) if layout == "NCHW" else (0, 3, 1, 2))
        elif kind == "rows":  # (B, ...) -> (B, a, -1), a dense map on the last axis, flatten
            h = (h.reshape(h.shape[0], attrs["a"], -1) @ p["w"]).reshape(h.shape[0], -1)
        else:  # pragma: no cover
            raise ValueError(kind)
        values.append(h)
    return values[-1]


class _Builder:
    """Grows an op list, evaluating it at the centres as it goes (for shapes and biases)."""

    def __init__(self, rng, x, layout, relu_budget, forms):
        self.rng, self.layout, self.budget, self.forms = rng, layout, relu_budget, forms
        self.ops, self.params, self.values = [], {}, [jnp.asarray(x, jnp.float32)]

    @property
    def h(self):
        return self.values[-1]

    def add(self, kind, attrs=None, params=None, src=None):
        i = len(self.ops)
        src = (len(self.values) - 1,) if src is None else src
        op = (kind, src, attrs or {})
        if params:
            self.params[f"op{i}"] = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        if kind == "add":
            value = self.values[src[0]] + self.values[src[1]]
        else:
            alone = [(kind, (0,), op[2])]
            value = _run(alone, {"op0": self.params.get(f"op{i}", {})}, self.values[src[0]],
                         self.layout)
        self.ops.append(op)
        self.values.append(value)

    def centred_bias(self, pre, channels):
        """A bias that puts about half the units of `pre` (the value before it) above zero."""
        axes = tuple(a for a in range(pre.ndim) if a != self.channel_axis(pre.ndim))
        median = np.median(np.asarray(pre), axis=axes)
        spread = np.std(np.asarray(pre)) + 0.1
        bias = -median + self.rng.normal(size=channels) * 0.3 * spread
        return bias.reshape(_channel_shape(self.layout, pre.ndim, channels))

    def channel_axis(self, ndim):
        return ndim - 1 if ndim == 2 or self.layout == "NHWC" else 1

    def channels(self):
        return self.h.shape[self.channel_axis(self.h.ndim)]

    def relu(self):
        size = math.prod(self.h.shape[1:])
        if size > self.budget:
            return False
        self.budget -= size
        self.add("relu", {"form": str(self.rng.choice(self.forms))})
        return True

    def conv(self, relu_next):
        rng, c_in = self.rng, self.channels()
        spatial = self.h.shape[2:] if self.layout == "NCHW" else self.h.shape[1:3]
        for _ in range(20):
            k = int(rng.choice([1, 2, 3]))
            stride = int(rng.choice([1, 2]))
            dil = int(rng.choice([1, 1, 2]))
            lhs = 2 if rng.random() < 0.08 else 1
            padding = [0, 1, 2, "SAME", "VALID", "asym"][rng.integers(6)]
            if padding == "asym":
                padding = tuple(tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(2))
            elif isinstance(padding, int) or lhs > 1:  # no "SAME"/"VALID" with lhs dilation
                padding = ((padding, padding),) * 2 if isinstance(padding, int) else ((1, 1),) * 2
            groups = int(rng.choice([g for g in range(1, c_in + 1) if c_in % g == 0]))
            if rng.random() < 0.6:
                groups = 1
            out = groups * int(rng.integers(1, max(2, 5 // groups) + 1))
            size = [_conv_size(n, k, stride, padding, dil, lhs, d) for d, n in enumerate(spatial)]
            if min(size) >= 1 and (not relu_next or out * math.prod(size) <= self.budget):
                break
        else:
            return False
        fan_in = c_in // groups * k * k
        shape = (out, c_in // groups, k, k) if self.layout == "NCHW" else (k, k, c_in // groups,
                                                                           out)
        w = self.rng.normal(size=shape) * rng.uniform(0.8, 1.6) / np.sqrt(fan_in)
        attrs = {"k": k, "out": out, "stride": stride, "padding": padding, "dil": dil, "lhs": lhs,
                 "groups": groups}  # fmt: skip
        with_bias = rng.random() < 0.75
        attrs["bias"] = with_bias
        params = {"w": w}
        if with_bias:  # centred below, once the convolution's output is known
            params["b"] = np.zeros(_channel_shape(self.layout, 4, out))
        self.add("conv", attrs, params)
        if with_bias:
            self._recentre(relu_next)
        return True

    def dense(self, width, relu_next, bias=True):
        fan_in = self.h.shape[-1]
        w = self.rng.normal(size=(fan_in, width)) * self.rng.uniform(0.8, 1.6) / np.sqrt(fan_in)
        params = {"w": w}
        if bias:
            params["b"] = np.zeros(width)
        self.add("dense", {"width": width}, params)
        if bias:
            self._recentre(relu_next)

    def _recentre(self, relu_next):
        """Set the last op's bias: centred before a ReLU, small noise otherwise."""
        p = self.params[f"op{len(self.ops) - 1}"]
        pre = self.h - p["b"]
        n = p["b"].size
        b = self.centred_bias(pre, n) if relu_next else self.rng.normal(size=p["b"].shape) * 0.2
        p["b"] = jnp.asarray(np.reshape(b, p["b"].shape), jnp.float32)
        self.values[-1] = pre + p["b"]

    def between(self):
        """A bias add, subtraction, negation or nothing (what joins linear layers)."""
        choice = self.rng.choice(["bias", "subbias", "neg", "none"])
        shape = _channel_shape(self.layout, self.h.ndim, self.channels())
        if choice in ("bias", "subbias"):
            self.add(str(choice), params={"b": self.rng.normal(size=shape) * 0.2})
        elif choice == "neg":
            self.add("neg")

    def batch_norm(self):
        shape = _channel_shape(self.layout, self.h.ndim, self.channels())
        rng = self.rng
        self.add("bn", params={"mean": rng.normal(size=shape) * 0.2,
                               "var": rng.uniform(0.3, 2.0, shape),
                               "gamma": rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape),
                               "beta": rng.normal(size=shape) * 0.2})  # fmt: skip

    def pool(self):
        spatial = self.h.shape[2:] if self.layout == "NCHW" else self.h.shape[1:3]
        k, s = int(self.rng.choice([2, 3])), int(self.rng.choice([1, 2]))
        padding = str(self.rng.choice(["VALID", "SAME"]))
        if padding == "VALID" and min(spatial) < k:
            return
        self.add("pool", {"k": k, "s": s, "padding": padding})

    def residual(self):
        """Add an earlier tensor of the same shape, if there is one (not the input itself)."""
        same = [i for i, v in enumerate(self.values[1:-1], 1) if v.shape == self.h.shape]
        if same:
            self.add("add", src=(len(self.values) - 1, int(self.rng.choice(same))))

    def build(self, num_classes):
        ops = [(k, s, a) for k, s, a in self.ops]
        return ops, dict(self.params), num_classes


def _conv_size(n, k, stride, padding, dil, lhs, d):
    n = (n - 1) * lhs + 1
    span = dil * (k - 1) + 1
    if padding == "SAME":
        return -(-n // stride)
    if padding == "VALID":
        return (n - span) // stride + 1 if n >= span else 0
    low, high = padding[d]
    return (n + low + high - span) // stride + 1 if n + low + high >= span else 0


def _centres(rng, shape, count=2):
    """Centres in [0, 1], some coordinates on the box's faces."""
    x = rng.uniform(0.05, 0.95, (count, *shape))
    faces = rng.random(x.shape) < 0.1
    x[faces] = rng.choice([0.0, 1.0], int(faces.sum()))
    return jnp.asarray(x, jnp.float32)


def generate(seed, *, exact=False):
    """The architecture of a seed: an MLP, a CNN, a residual network or a Flax model.

    With exact=True, a sequential MLP or CNN with at most 12 ReLUs (the enumeration's size).
    """
    rng = np.random.default_rng(seed)
    num_classes = int(rng.choice(CLASSES))
    forms = RELU_FORMS if rng.random() < 0.15 else RELU_FORMS[:2]
    if not exact and rng.random() < 0.35:
        forms = (*forms, *ACTIVATION_FORMS)
    if exact:
        family = str(rng.choice(["mlp", "cnn"]))
        budget = 12
    else:
        family = str(rng.choice(["mlp", "cnn", "cnn", "residual", "flax"]))
        budget = int(rng.integers(8, 101))
    if family == "flax":
        return _flax_architecture(seed, rng, num_classes)
    layout = str(rng.choice(["NCHW", "NHWC"]))
    if family == "mlp" or (family == "residual" and rng.random() < 0.5):
        flat = (int(rng.choice(INPUT_SIZES)),)
        shape = flat if rng.random() < 0.7 else _image(rng, layout, exact)
    else:
        shape = _image(rng, layout, exact)
    x = _centres(rng, shape)
    b = _Builder(rng, x, layout, budget, forms)
    if len(shape) > 1 and family != "mlp":
        _conv_layers(b, rng, residual=family == "residual", exact=exact)
    if b.h.ndim > 2:
        if rng.random() < 0.15 and not exact:
            b.add("transpose")
        if rng.random() < 0.15 and not exact and b.h.shape[1] > 1:
            a = int(b.h.shape[1])
            fan_in = math.prod(b.h.shape[2:])
            b.add("rows", {"a": a}, {"w": rng.normal(size=(fan_in, 3)) / np.sqrt(fan_in)})
        else:
            b.add("flatten")
    _dense_layers(b, rng, residual=family == "residual", exact=exact)
    b.dense(num_classes, relu_next=False)
    ops, params, num_classes = b.build(num_classes)
    return Architecture(seed, ops, params, x, num_classes, layout)


def _image(rng, layout, exact):
    c = int(rng.integers(1, 3)) if exact else int(rng.choice(IMAGE_CHANNELS))
    h, w = rng.integers(4, 6, 2) if exact else rng.choice(IMAGE_SIDES, 2)
    return (c, int(h), int(w)) if layout == "NCHW" else (int(h), int(w), c)


def _conv_layers(b, rng, residual, exact):
    for _ in range(int(rng.integers(1, 3 if exact else 4))):
        relu = rng.random() < (0.9 if exact else 0.75)
        chained = not exact and rng.random() < 0.45  # two convolutions with no ReLU between
        if chained:
            if not b.conv(relu_next=False):
                break
            b.between()
        if not b.conv(relu_next=relu):
            break
        if not exact and rng.random() < 0.2:
            b.batch_norm()
        if relu:
            b.relu()
        if not exact and rng.random() < 0.2:
            b.pool()
        if residual or (not exact and rng.random() < 0.2):
            b.residual()


def _dense_layers(b, rng, residual, exact):
    at_least = 1 if exact or len(b.ops) < 2 else 0
    for _ in range(int(rng.integers(at_least, 3))):
        width = min(int(rng.choice(WIDTHS)), b.budget)
        if width < 1:
            break
        if not exact and rng.random() < 0.3:  # a linear layer with no activation after it
            b.dense(int(rng.choice(WIDTHS)), relu_next=False, bias=rng.random() < 0.5)
            if rng.random() < 0.3:
                b.between()
        b.dense(width, relu_next=True)
        if not exact and rng.random() < 0.15:
            b.batch_norm()
        b.relu()
        if residual and not exact:
            b.dense(width, relu_next=False)
            b.residual()


class _FlaxNet(fnn.Module):
    """A Flax linen CNN from a list of layer descriptions."""

    layers: tuple
    num_classes: int

    @fnn.compact
    def __call__(self, x):
        for kind, a in self.layers:
            if kind == "conv":
                x = fnn.Conv(a["out"], (a["k"], a["k"]), strides=a["stride"], padding=a["padding"],
                             kernel_dilation=a["dil"], feature_group_count=a["groups"],
                             use_bias=a["bias"])(x)  # fmt: skip
            elif kind == "relu":
                x = fnn.relu(x)
            elif kind == "bn":
                x = fnn.BatchNorm(use_running_average=True)(x)
            elif kind == "pool":
                x = fnn.avg_pool(x, (2, 2), strides=(a["s"], a["s"]), padding=a["padding"])
            elif kind == "dense":
                x = fnn.Dense(a["width"])(x)
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
        return fnn.Dense(self.num_classes)(x)


def _flax_architecture(seed, rng, num_classes):
    h, w = (int(v) for v in rng.choice(IMAGE_SIDES, 2))
    c_in = int(rng.choice(IMAGE_CHANNELS))
    layers, spatial, c, relus = [], (h, w), c_in, 0
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(20):
            k, stride, dil = int(rng.choice([1, 2, 3])), int(rng.choice([1, 2])), int(
                rng.choice([1, 1, 2]))
            padding = str(rng.choice(["SAME", "VALID"])) if rng.random() < 0.7 else int(
                rng.integers(0, 3))
            pad = ((padding, padding),) * 2 if isinstance(padding, int) else padding
            size = [_conv_size(n, k, stride, pad, dil, 1, d) for d, n in enumerate(spatial)]
            if min(size) >= 1:
                break
        else:
            break
        groups = 1 if c == 1 or rng.random() < 0.7 else c
        out = groups * int(rng.integers(1, 3))
        layers.append(("conv", {"out": out, "k": k, "stride": stride, "padding": padding,
                                "dil": dil, "groups": groups, "bias": bool(rng.random() < 0.8)}))
        spatial, c = tuple(size), out
        if rng.random() < 0.2:
            layers.append(("bn", {}))
        if rng.random() < 0.7 and relus + out * math.prod(spatial) <= 100:
            layers.append(("relu", {}))
            relus += out * math.prod(spatial)
        if rng.random() < 0.15 and min(spatial) >= 2:
            layers.append(("pool", {"s": 1, "padding": "VALID"}))
            spatial = tuple(n - 1 for n in spatial)
    layers.append(("flatten", {}))
    if rng.random() < 0.6:
        layers += [("dense", {"width": int(rng.choice(WIDTHS))}), ("relu", {})]
    model = _FlaxNet(tuple(layers), num_classes)
    x = _centres(rng, (h, w, c_in))
    params = model.init(jax.random.key(seed % (2**31)), x)
    leaves, tree = jax.tree.flatten(params)
    noisy = [np.asarray(v) * rng.uniform(0.8, 1.6) + rng.normal(size=v.shape) * 0.15
             for v in leaves]  # fmt: skip
    params = jax.tree.unflatten(tree, [jnp.asarray(v, jnp.float32) for v in noisy])
    params = jax.tree_util.tree_map_with_path(_positive_variance, params)
    ops = [(kind, (i,), attrs) for i, (kind, attrs) in enumerate(layers)]
    return Architecture(seed, ops, params, x, num_classes, "NHWC", flax_model=model)


def _positive_variance(path, value):
    if any(getattr(p, "key", None) == "var" for p in path):
        return jnp.abs(value) + 0.3
    return value


# ---------------------------------------------------------------------------------------------
# Input sets, points inside them, and the float64 oracle.


def _make_set(kind, x, eps, boxed):
    cls = {"linf": jc.LinfBall, "l2": jc.L2Ball, "l1": jc.L1Ball}[kind]
    lower, upper = (0.0, 1.0) if boxed else (-np.inf, np.inf)
    return cls(x, eps, lower=lower, upper=upper)


class _Region:
    """One example's set in float64: {z : ||z - x||_p <= eps, lower <= z <= upper}."""

    def __init__(self, kind, x, eps, boxed):
        self.kind, self.x, self.eps = kind, np.asarray(x, np.float64).reshape(-1), float(eps)
        self.lo = np.maximum(self.x - self.eps, 0.0 if boxed else -np.inf)
        self.hi = np.minimum(self.x + self.eps, 1.0 if boxed else np.inf)

    def project(self, z):
        """A point of the set near each row of z (exact projection for l_inf and l_2 balls)."""
        delta = z - self.x
        if self.kind == "l2":
            norm = np.linalg.norm(delta, axis=1, keepdims=True)
            delta = delta * np.minimum(1.0, self.eps / np.maximum(norm, 1e-300))
        elif self.kind == "l1":
            delta = _l1_projection(delta, self.eps)
        return np.clip(self.x + delta, self.lo, self.hi)  # clipping towards x keeps the ball

    def contains(self, z):
        inside = np.all((z >= self.lo) & (z <= self.hi), axis=1)
        delta = z - self.x
        if self.kind == "l2":
            inside &= np.linalg.norm(delta, axis=1) <= self.eps
        elif self.kind == "l1":
            inside &= np.abs(delta).sum(axis=1) <= self.eps
        return inside

    def float32_inside(self, z):
        """z rounded to float32, pulled towards x until it lies in the set exactly."""
        z32 = np.clip(z, self.lo, self.hi).astype(np.float32)
        lo32, hi32 = (np.asarray(v, np.float32) for v in (self.lo, self.hi))
        lo32 = np.where(lo32 < self.lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
        hi32 = np.where(hi32 > self.hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
        z32 = np.clip(z32, lo32, hi32)
        x32 = self.x.astype(np.float32)
        for _ in range(60):
            bad = ~self.contains(z32.astype(np.float64))
            if not bad.any():
                return z32
            z32[bad] = x32 + (z32[bad] - x32) * np.float32(1 - 1e-6)
        z32[~self.contains(z32.astype(np.float64))] = x32  # the centre lies in the set
        return z32

    def sample(self, rng, num):
        d = self.x.size
        half = num // 2
        if self.kind == "linf":
            delta = np.concatenate([rng.uniform(-1, 1, (half, d)),
                                    rng.choice([-1.0, 1.0], (num - half, d))])  # fmt: skip
        elif self.kind == "l2":
            g = rng.normal(size=(num, d))
            g /= np.linalg.norm(g, axis=1, keepdims=True)
            radius = np.concatenate([rng.uniform(0, 1, half) ** (1 / d), np.ones(num - half)])
            delta = g * radius[:, None]
        else:
            e = rng.exponential(size=(half, d + 1))
            inner = e[:, :d] / e.sum(axis=1, keepdims=True) * rng.choice([-1.0, 1.0], (half, d))
            basis = np.concatenate([np.eye(d), -np.eye(d)])
            extra = basis[rng.integers(0, 2 * d, max(0, num - half - 2 * d))]
            delta = np.concatenate([inner, basis, extra])
            delta = delta[rng.permutation(len(delta))[:num]]
        return self.float32_inside(np.clip(self.x + self.eps * delta, self.lo, self.hi))


def _l1_projection(delta, eps):
    """Euclidean projection of each row onto {||v||_1 <= eps} (Duchi et al., 2008)."""
    a = np.abs(delta)
    out = delta.copy()
    outside = a.sum(axis=1) > eps
    if outside.any():
        u = -np.sort(-a[outside], axis=1)
        cs = np.cumsum(u, axis=1) - eps
        k = np.arange(1, u.shape[1] + 1)
        rho = np.sum(u - cs / k > 0, axis=1)
        theta = cs[np.arange(len(rho)), rho - 1] / rho
        out[outside] = np.sign(delta[outside]) * np.maximum(a[outside] - theta[:, None], 0)
    return out


def _float64_forward(arch, points):
    """Logits and every ReLU's input at float32 points, computed in float64 throughout, one
    point at a time (`lax.map`): XLA:CPU sums padded pooling windows wrongly in batches of
    about 512 and more, which once made this oracle report a false violation."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v, np.float64)), arch.params)

        def one(z):
            pre = []

            def hook(index, h, form):
                pre.append(h[0])
                return _relu(form, h)

            if arch.flax_model is not None:
                return arch.apply(params, z[None])[0], []
            return arch.apply(params, z[None], relu=hook)[0], pre

        out, pre = jax.jit(lambda z: lax.map(one, z))(jnp.asarray(np.asarray(points, np.float64)))
        return np.asarray(out), [np.asarray(p) for p in pre]


def _pgd_points(arch, regions, directions, rng):
    """Iterates of a signed-gradient descent on <d, f(z)> for each direction d, from the
    centre and from a random point of each example's set, projected on the set."""
    grad = jax.grad(lambda z, d: jnp.sum(d * arch.apply(arch.params, z)))
    shape = arch.x.shape[1:]
    starts, dirs, owner = [], [], []
    for b, region in enumerate(regions):
        d = directions[b]
        random = region.sample(rng, len(d)).astype(np.float64)
        centre = np.broadcast_to(region.project(region.x[None]), random.shape)
        starts += [centre, random]
        dirs += [d, d]
        owner += [b] * (2 * len(d))
    z, dirs, owner = np.concatenate(starts), np.concatenate(dirs), np.array(owner)
    found = []
    for _ in range(PGD_STEPS):
        g = np.asarray(grad(jnp.asarray(z.reshape(-1, *shape), jnp.float32),
                            jnp.asarray(dirs, jnp.float32))).reshape(len(z), -1)  # fmt: skip
        for b, region in enumerate(regions):
            rows = owner == b
            step = region.eps / 3
            if region.kind == "linf":
                move = np.sign(g[rows])
            elif region.kind == "l2":
                move = g[rows] / np.maximum(np.linalg.norm(g[rows], axis=1, keepdims=True), 1e-12)
            else:
                move = np.zeros_like(g[rows])
                top = np.argmax(np.abs(g[rows]), axis=1)
                move[np.arange(len(top)), top] = np.sign(g[rows][np.arange(len(top)), top])
            z[rows] = region.project(z[rows] - step * move)
        found.append(z.copy())
    found = np.stack(found, axis=1)  # (points, steps, d)
    return [regions[b].float32_inside(found[owner == b].reshape(-1, found.shape[-1]))
            for b in range(len(regions))]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Every bound method against the samples.


def _bound_calls(net, spec, C, y, pick, with_lp):
    """(name, what is bounded, thunk) for every method on one set.

    `pick` chooses the relaxation options: None for all of them (and every kind of output: the
    outputs, C @ outputs, the ReLU inputs), else an integer that rotates them (two of the
    eight CROWN slope x intermediate choices, one alpha-CROWN intermediate choice), so that
    consecutive seeds cover every option with one call per method and kind of output.
    """
    b = jc.bounds
    if pick is None:
        combos, alphas = RELU_OPTIONS, ("crown", "ibp")
    else:
        combos = (RELU_OPTIONS[pick % 8], RELU_OPTIONS[(pick + 3) % 8])
        alphas = (("crown", "ibp")[pick % 2],)
    calls = [("ibp", "out", lambda: b.ibp(net, spec))]
    if pick is None:
        calls.append(("ibp C", "C", lambda: b.ibp(net, spec, C)))
    for relu, inter in combos[:-1]:
        calls.append((f"crown relu={relu} intermediate={inter}", "out",
                      lambda r=relu, m=inter: b.crown(net, spec, relu=r, intermediate=m)))
    relu, inter = combos[-1]
    calls.append((f"crown C relu={relu} intermediate={inter}", "C",
                  lambda r=relu, m=inter: b.crown(net, spec, C, relu=r, intermediate=m)))
    for inter in alphas:
        calls.append((f"alpha-crown C intermediate={inter}", "C",
                      lambda m=inter: b.alpha_crown(net, spec, C, steps=ALPHA_STEPS,
                                                    intermediate=m)))  # fmt: skip
    relu = combos[0][0]
    for method in ("crown", "ibp") if pick is None else ("crown",):
        calls.append((f"intermediate_bounds method={method} relu={relu}", "pre",
                      lambda m=method, r=relu: b.intermediate_bounds(net, spec, method=m, relu=r)))
    options = {"crown": {"relu": relu}, "crown-ibp": {"relu": relu},
               "alpha-crown": {"steps": ALPHA_STEPS}}  # fmt: skip
    for method in MARGIN_METHODS:
        if method != "lp" or with_lp:
            kw = options.get(method, {})
            calls.append((f"margins method={method}" + "".join(f" {k}={v}" for k, v in kw.items()),
                           "margin", lambda m=method, kw=kw: b.margins(net, spec, y, m, **kw)))
    if with_lp:
        if pick is None:
            calls.append(("lp", "out", lambda: b.lp(net, spec)))
        calls.append(("lp C intermediate=crown", "C",
                      lambda: b.lp(net, spec, C, intermediate="crown")))
    return calls


def _excess(lower, upper, values):
    """How far values (N, ...) fall outside [lower, upper] beyond the tolerance; NaN bounds
    count as infinitely far."""
    tol = TOLERANCE * (1 + np.abs(values))
    low = np.where(np.isnan(lower), np.inf, lower - values - tol)
    high = np.where(np.isnan(upper), np.inf, values - upper - tol)
    return np.maximum(low, high)


def _compare(what, result, b, y, C, out, pre):
    """The worst excess of one example's samples over one bound result, and its place."""
    if what == "pre":
        worst = (-np.inf, None)
        for r, (bound, values) in enumerate(zip(result, pre)):
            e = _excess(np.asarray(bound.lower[b]), np.asarray(bound.upper[b]), values)
            if e.size and e.max() > worst[0]:
                unit = np.unravel_index(e.argmax(), e.shape)[1:]
                worst = (float(e.max()), f"relu {r} unit {tuple(int(u) for u in unit)}")
        return worst
    if what == "margin":
        values = out[:, y[b]][:, None] - out
        lower = np.where(np.arange(out.shape[1]) == y[b], -np.inf, np.asarray(result[b]))
        e = _excess(lower, np.inf, values)
    else:
        values = out if what == "out" else out @ np.asarray(C[b], np.float64).T
        e = _excess(np.asarray(result.lower[b]), np.asarray(result.upper[b]), values)
    return float(e.max()), f"entry {int(e.argmax() % e.shape[1])}"


def check_architecture(seed, *, full=False, with_lp=None):
    """Bound one generated architecture by every method over an input set.

    Args:
      seed: the architecture's seed.
      full: every relaxation option over every kind of set (l_inf, l2, l1); by default one
        kind of set and two CROWN options, rotating with the seed (with and without the data
        box, every option, every kind of set over consecutive seeds).
      with_lp: include the LP relaxation (default: one seed in four, on l_inf and l1 sets).

    Returns:
      A dict: family and description, number of bound results checked, violations (each with
      the seed, set, method and how far outside its bound a sampled value fell) and errors.
    """
    began = time.perf_counter()
    arch = generate(seed)
    report = {"seed": seed, "description": arch.describe(), "checks": 0, "comparisons": 0,
              "violations": [], "errors": []}  # fmt: skip
    rng = np.random.default_rng([seed, 1])
    try:
        net = jc.trace(arch.apply, arch.params, arch.x)
        report["relus"] = int(sum(math.prod(e.inputs[0].shape) for e in net.activations()))
    except Exception as e:  # noqa: BLE001 - every failure is reported with its seed
        report["errors"].append({"seed": seed, "method": "trace", "error": _brief(e)})
        return _finish(report, began)
    with_lp = (seed % 4 == 0 and report["relus"] <= 60) if with_lp is None else with_lp
    logits = np.asarray(arch.apply(arch.params, arch.x))
    y = np.argmax(logits, axis=1)
    num_classes = logits.shape[1]
    C = jnp.asarray(rng.normal(size=(len(y), 3, num_classes)), jnp.float32)
    d = math.prod(arch.x.shape[1:])
    kinds = SET_KINDS if full else (SET_KINDS[seed % 3],)
    for kind in kinds:
        boxed = bool((seed // 3 + SET_KINDS.index(kind)) % 2)
        base = 10 ** rng.uniform(-2.5, -0.8)
        eps = {"linf": base, "l2": base * np.sqrt(d) * rng.uniform(0.3, 1.0),
               "l1": base * d * rng.uniform(0.1, 0.5)}[kind]  # fmt: skip
        eps = float(np.float32(eps))
        spec = _make_set(kind, arch.x, eps, boxed)
        regions = [_Region(kind, x, eps, boxed) for x in np.asarray(arch.x)]
        eye = np.eye(num_classes)
        directions = [np.concatenate([eye, -eye, np.asarray(C[b]), -np.asarray(C[b]),
                                      eye[y[b]] - np.delete(eye, y[b], axis=0)])
                      for b in range(len(y))]  # fmt: skip
        samples = [r.sample(rng, SAMPLES) for r in regions]
        try:
            attacked = _pgd_points(arch, regions, directions, rng)
        except Exception as e:  # noqa: BLE001
            report["errors"].append({"seed": seed, "set": kind, "method": "pgd",
                                     "error": _brief(e)})  # fmt: skip
            attacked = [s[:0] for s in samples]
        evaluated = []
        for b in range(len(y)):
            points = np.concatenate([samples[b], attacked[b]]).reshape(-1, *arch.x.shape[1:])
            evaluated.append(_float64_forward(arch, points))
        pick = None if full else seed // 6
        for name, what, thunk in _bound_calls(net, spec, C, y, pick, with_lp and kind != "l2"):
            if what == "pre" and arch.flax_model is not None:
                continue
            try:
                result = thunk()
            except Exception as e:  # noqa: BLE001
                report["errors"].append({"seed": seed, "set": kind, "boxed": boxed,
                                         "method": name, "error": _brief(e)})  # fmt: skip
                continue
            report["checks"] += 1
            for b, (out, pre) in enumerate(evaluated):
                report["comparisons"] += out.size
                excess, where = _compare(what, result, b, y, C, out, pre)
                if excess > 0:
                    report["violations"].append({
                        "seed": seed, "set": kind, "boxed": boxed, "eps": eps, "method": name,
                        "example": b, "excess": excess, "where": where,
                    })  # fmt: skip
    return _finish(report, began)


def _brief(error):
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text[:300]


def _finish(report, began):
    report["seconds"] = time.perf_counter() - began
    return report


# ---------------------------------------------------------------------------------------------
# Exact answers against enumeration of activation patterns.


def _segments(arch):
    """The affine maps between consecutive ReLUs of a sequential architecture, in float64:
    [(M, b)] with pre-activation_k = M_k post-activation_{k-1} + b_k (flattened)."""
    cuts = [i for i, op in enumerate(arch.ops) if op[0] == "relu"]
    bounds = list(zip([0, *(c + 1 for c in cuts)], [*cuts, len(arch.ops)]))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v, np.float64)), arch.params)
        shape = arch.x.shape[1:]
        out = []
        for begin, stop in bounds:
            ops = arch.ops[:stop]

            def f(flat, begin=begin, ops=ops, shape=shape):
                return _run(ops, params, flat.reshape(1, *shape), arch.layout, start=begin)[0]

            zero = jnp.zeros(math.prod(shape), jnp.float64)
            b = f(zero)
            M = jax.jacfwd(lambda v, f=f: f(v).reshape(-1))(zero)
            out.append((np.asarray(M), np.asarray(b).reshape(-1)))
            shape = b.shape
    return out


class _Enumeration:
    """min over the set of f_y - f_j for every j by one LP per feasible activation pattern."""

    def __init__(self, segments, region, max_lps=4000):
        self.segments, self.region, self.max_lps = segments, region, max_lps
        d = region.x.size
        self.d = d
        # LP variables: z (d), plus t (d) with |z - x| <= t, sum t <= eps for an l1 ball.
        self.n = d if region.kind == "linf" else 2 * d
        self.bounds = [(float(lo), float(hi)) for lo, hi in zip(region.lo, region.hi)]
        rows, rhs = [], []
        if region.kind == "l1":
            eye = np.eye(d)
            rows += [np.hstack([eye, -eye]), np.hstack([-eye, -eye]),
                     np.hstack([np.zeros((1, d)), np.ones((1, d))])]  # fmt: skip
            rhs += [region.x, -region.x, [region.eps]]
            self.bounds += [(0.0, region.eps)] * d
        self.base_rows = np.vstack(rows) if rows else np.zeros((0, self.n))
        self.base_rhs = np.concatenate(rhs) if rhs else np.zeros(0)
        self.lps = 0
        # Interval bounds of every pre-activation, to fix the stable units without an LP.
        lo, hi = region.lo, region.hi
        self.stable = []
        for M, b in segments[:-1]:
            centre, radius = M @ ((lo + hi) / 2) + b, np.abs(M) @ ((hi - lo) / 2)
            pre_lo, pre_hi = centre - radius, centre + radius
            self.stable.append(np.where(pre_lo >= 0, 1, np.where(pre_hi <= 0, 0, -1)))
            lo, hi = np.maximum(pre_lo, 0), np.maximum(pre_hi, 0)

    def _lp(self, c, rows, rhs):
        self.lps += 1
        if self.lps > self.max_lps:
            raise RuntimeError("too many activation patterns")
        A = np.vstack([self.base_rows, *rows]) if rows else self.base_rows
        b = np.concatenate([self.base_rhs, *rhs]) if rows else self.base_rhs
        res = scipy.optimize.linprog(c, A_ub=A if len(A) else None, b_ub=b if len(b) else None,
                                     bounds=self.bounds, method="highs")  # fmt: skip
        return res if res.status == 0 else None

    def minimum(self, y):
        """(exact minimum of f_y - min over j, a point attaining it, its class j)."""
        self.best = (np.inf, None, -1)
        self.y = y
        start = self._lp(np.zeros(self.n), [], [])
        d = self.d
        self._layer(0, np.eye(d, self.n), np.zeros(d), [], [], start.x)
        return self.best

    def _layer(self, k, A, c, rows, rhs, point):
        M, b = self.segments[k]
        P, q = M @ A, M @ c + b
        if k == len(self.segments) - 1:
            for j in range(len(q)):
                if j != self.y:
                    res = self._lp(P[self.y] - P[j], rows, rhs)
                    value = res.fun + q[self.y] - q[j]
                    if value < self.best[0]:
                        self.best = (value, res.x[:self.d], j)
            return
        self._branch(k, P, q, 0, np.zeros(len(q)), rows, rhs, point)

    def _branch(self, k, P, q, i, mask, rows, rhs, point):
        if i == len(q):
            self._layer(k + 1, P * mask[:, None], q * mask, rows, rhs, point)
            return
        fixed = self.stable[k][i]
        if fixed >= 0:
            mask = mask.copy()
            mask[i] = fixed
            self._branch(k, P, q, i + 1, mask, rows, rhs, point)
            return
        here = 1 if P[i] @ point + q[i] >= 0 else 0
        for active in (here, 1 - here):
            sign = -1.0 if active else 1.0  # active: pre >= 0; inactive: pre <= 0
            row, bound = sign * P[i][None], np.array([-sign * q[i]])
            child = point
            if active != here:
                res = self._lp(np.zeros(self.n), rows + [row], rhs + [bound])
                if res is None:
                    continue
                child = res.x
            m = mask.copy()
            m[i] = active
            self._branch(k, P, q, i + 1, m, rows + [row], rhs + [bound], child)


def _margin64(arch, params, z, y):
    """min over j != y of f_y(z) - f_j(z), in float64, at points z (N, ...)."""
    with jax.enable_x64(True):
        p = jax.tree.map(lambda v: jnp.asarray(np.asarray(v, np.float64)), params)
        out = np.asarray(arch.apply(p, jnp.asarray(np.asarray(z, np.float64))))
    return out[:, y] - np.max(np.delete(out, y, axis=1), axis=1)


def check_exact(seed, *, solver=None, strategies=STRATEGIES):
    """Compare `jaxcert.exact.verify` with the exact minimum margin of a tiny network.

    Returns:
      A dict with the status, the exact minimum, and `wrong` (a reason) when the answer
      contradicts it: "verified" with a minimum <= 0, a "falsified" whose counterexample is
      outside the set or not misclassified, or no decision far from zero.
    """
    began = time.perf_counter()
    arch = generate(seed, exact=True)
    rng = np.random.default_rng([seed, 2])
    x = arch.x[:1]
    kind = "l1" if rng.random() < 0.3 else "linf"
    d = math.prod(x.shape[1:])
    base = 10 ** rng.uniform(-1.7, -0.7)
    eps = float(np.float32(base if kind == "linf" else base * d * rng.uniform(0.1, 0.4)))
    region = _Region(kind, x[0], eps, True)
    y = int(np.argmax(np.asarray(arch.apply(arch.params, x))[0]))
    report = {"seed": seed, "description": arch.describe(), "set": kind, "eps": eps}
    enum = _Enumeration(_segments(arch), region)
    try:
        value, point, _ = enum.minimum(y)
    except RuntimeError as e:
        report.update(skipped=str(e))
        return _finish(report, began)
    report["lps"] = enum.lps
    # Optionally shift the output bias of class y so that the minimum lands near zero.
    if rng.random() < 0.6:
        target = float(rng.choice(NEAR_SHIFTS) * rng.choice([-1, 1]))
        last = f"op{len(arch.ops) - 1}"
        old = np.asarray(arch.params[last]["b"])
        new = old.copy()
        new[y] = np.float32(old[y] + (target - value))
        arch.params = {**arch.params, last: {**arch.params[last], "b": jnp.asarray(new)}}
        value += float(np.float64(new[y]) - np.float64(old[y]))  # exact: the shift as stored
        report["placed"] = target
    point = region.project(point[None])  # the LP's point, exactly inside the set
    attained = float(_margin64(arch, arch.params, point.reshape(1, *x.shape[1:]), y)[0])
    report["exact"], report["attained"] = value, attained
    spec = jc.LinfBall(x, eps) if kind == "linf" else jc.L1Ball(x, eps)
    net = jc.trace(arch.apply, arch.params, x)
    options = {"mode": str(rng.choice(["decide", "minimum"])),
               "attack_steps": int(rng.choice([0, 10])),
               "bounds": str(rng.choice(["crown", "crown-ibp", "alpha-crown", "ibp"])),
               "solver": solver or ("race" if seed % RACE_EVERY == 0
                                    else EXACT_SOLVERS[seed % 2])}  # fmt: skip
    report["options"] = options
    runs = {
        "milp": {**options, "strategy": "milp", "time_limit": 60},
        "bab-relu": {"strategy": "bab", "split": "relu", "time_limit": BAB_LIMIT,
                     "attack_steps": options["attack_steps"],
                     "branching": ("babsr", "fsb")[seed % 2]},
        "bab-input": {"strategy": "bab", "split": "input", "time_limit": BAB_LIMIT,
                      "attack_steps": options["attack_steps"]},
    }  # fmt: skip
    if kind != "linf" or d > 16:  # input splits: box-shaped sets of few inputs only
        del runs["bab-input"]
    lowest = min(value, attained)  # the enumeration's LP optimum and the value at its point
    report["strategies"] = {}
    for name in [n for n in runs if n in strategies]:
        verdict = {}
        try:
            r = jc.exact.verify(net, spec, np.array([y]), **runs[name])[0]
        except Exception as e:  # noqa: BLE001
            verdict["error"] = _brief(e)
            if runs[name].get("solver") != "race":
                report["strategies"][name] = verdict
                report.setdefault("error", f"{name}: {verdict['error']}")
                continue
            # the race failed: decide with HiGHS alone
            r = jc.exact.verify(net, spec, np.array([y]), **{**runs[name], "solver": "highs"})[0]
        verdict["status"], verdict["seconds"] = r.status, round(r.seconds, 3)
        if r.status == "verified" and attained <= 0:
            verdict["wrong"] = f"verified, but a point of the set has the margin {attained:.3g}"
        elif r.status == "verified" and value <= 0:
            verdict["ambiguous"] = (
                f"verified; the minimum margin is in [{value:.3g}, {attained:.3g}]"
            )
        elif r.status == "falsified":
            z = np.asarray(r.counterexample, np.float64).reshape(1, -1)
            margin = float(_margin64(arch, arch.params, z.reshape(1, *x.shape[1:]), y)[0])
            if not region.contains(z)[0]:
                verdict["wrong"] = "falsified by a counterexample outside the set"
            elif not margin < 0:
                verdict["wrong"] = f"falsified, but the counterexample's margin is {margin:.3g}"
        elif r.status not in ("verified", "falsified") and abs(lowest) > NEAR_ZERO and (
            max(value, attained) * lowest > 0
        ):
            verdict["undecided"] = f"{r.status} with the exact minimum margin {lowest:.3g}"
        report["strategies"][name] = verdict
        for key in ("wrong", "ambiguous", "undecided"):
            if key in verdict:
                report.setdefault(key, f"{name}: {verdict[key]}")
    report["status"] = report["strategies"].get("milp", {}).get("status")
    return _finish(report, began)


# ---------------------------------------------------------------------------------------------
# Running many seeds, in worker processes.


def _task(job):
    kind, seed, jit, full = job
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # compiles faster, runs as fast
    try:
        with contextlib.nullcontext() if jit else jax.disable_jit():
            if kind == "arch":
                return kind, check_architecture(seed, full=full)
            return kind, check_exact(seed)
    except Exception as e:  # noqa: BLE001 - a harness failure is reported, not fatal
        return kind, {"seed": seed, "harness_error": _brief(e),
                      "traceback": traceback.format_exc()[-2000:], "seconds": 0.0}
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        # drop this network's executables: kept for hundreds of networks, they exhausted the
        # workers' memory maps ("LLVM compilation error: Cannot allocate memory", then a crash)
        if jit:
            jax.clear_caches()


# Faster XLA compiles for CPU (about half the time per operation, the same results), set for
# the workers (before they start JAX) unless XLA_FLAGS is already set.
FAST_COMPILES = "--xla_cpu_use_fusion_emitters=false --xla_llvm_disable_expensive_passes=true"


def _start_worker(cache_dir):
    """Keep every compiled operation, however small, in `cache_dir` (shared by the workers
    and by later runs) if given."""
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _read_results(path):
    """The (kind, report) lines of a results file; a torn last line is dropped."""
    if not path or not os.path.exists(path):
        return []
    done = []
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.append((entry["kind"], entry["report"]))
    return done


def run(architectures, exact, *, seed=0, workers=1, jit=True, full=False, progress=False,
        out=None, cache_dir=None):  # fmt: skip
    """Check `architectures` generated networks and `exact` tiny ones in `workers` processes;
    return a summary.

    Seeds are seed * 10**6 + i for architectures and seed * 10**6 + 500000 + i for exact cases,
    so each result can be rebuilt with `check_architecture(s)` / `check_exact(s)`. With `out`,
    each report is appended to that JSON-lines file as it comes, seeds already there are not
    checked again (a stopped run resumes), and the summary covers every report in the file.
    """
    import concurrent.futures
    import multiprocessing

    jobs = [("arch", seed * 10**6 + i, jit, full) for i in range(architectures)]
    jobs += [("exact", seed * 10**6 + 500_000 + i, jit, full) for i in range(exact)]
    done = _read_results(out)
    seen = {(kind, report["seed"]) for kind, report in done}
    jobs = [job for job in jobs if (job[0], job[1]) not in seen]
    order = np.random.default_rng(seed).permutation(len(jobs))  # mix slow and fast jobs
    jobs = [jobs[i] for i in order]
    began = time.perf_counter()
    os.environ.setdefault("XLA_FLAGS", FAST_COMPILES)  # read by the workers' JAX
    # A worker that dies (killed, out of memory) breaks the pool: the run stops with an error
    # (BrokenProcessPool) instead of waiting forever for its task, and resumes from `out`.
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, multiprocessing.get_context("spawn"), _start_worker, (cache_dir,)
    )
    with pool, contextlib.ExitStack() as s:
        log = s.enter_context(open(out, "a")) if out else None
        futures = [pool.submit(_task, job) for job in jobs]
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
            kind, report = future.result()
            done.append((kind, report))
            if log:
                log.write(json.dumps({"kind": kind, "report": report}, default=str) + "\n")
                log.flush()
            if progress:
                print(f"{n}/{len(jobs)} {kind} {report['seed']} {report['seconds']:.1f}s "
                      f"{time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
    archs = [r for kind, r in done if kind == "arch"]
    cases = [r for kind, r in done if kind == "exact"]
    return _summary(archs, cases, time.perf_counter() - began, workers, jit, full)


def _summary(archs, cases, seconds, workers, jit, full):
    statuses, by_strategy = {}, {}
    for c in cases:
        if c.get("status"):
            statuses[c["status"]] = statuses.get(c["status"], 0) + 1
        for name, verdict in c.get("strategies", {}).items():
            counts = by_strategy.setdefault(name, {})
            status = verdict.get("status", "error")
            counts[status] = counts.get(status, 0) + 1

    def picked(reports, key):
        return [{k: r[k] for k in r if k not in ("traceback",)} for r in reports if key in r]

    harness = picked(archs + cases, "harness_error")
    return {
        "architectures": len(archs),
        "full_options": full,
        "checks": sum(r.get("checks", 0) for r in archs),
        "comparisons": sum(r.get("comparisons", 0) for r in archs),
        "violations": [v for r in archs for v in r.get("violations", [])],
        "architectures_with_violations": sorted({v["seed"] for r in archs
                                                 for v in r.get("violations", [])}),
        "errors": [e for r in archs for e in r.get("errors", [])],
        "exact": {
            "cases": len(cases),
            "decisions": statuses.get("verified", 0) + statuses.get("falsified", 0),
            "statuses": statuses,
            "statuses_by_strategy": by_strategy,
            "placed_near_zero": sum("placed" in c for c in cases),
            "wrong": picked(cases, "wrong"),
            "undecided_far_from_zero": picked(cases, "undecided"),
            "ambiguous": picked(cases, "ambiguous"),
            "solver_errors": picked(cases, "error"),
            "skipped": picked(cases, "skipped"),
        },
        "harness_errors": harness,
        "seconds": {
            "wall": round(seconds, 1),
            "workers": workers,
            "jit": jit,
            "per_architecture": round(np.mean([r["seconds"] for r in archs]), 2) if archs else 0,
            "per_exact_case": round(np.mean([r["seconds"] for r in cases]), 2) if cases else 0,
            "summed": round(sum(r["seconds"] for r in archs + cases), 1),
        },
    }


def failures(summary):
    """Everything in a summary that the default test run must not contain."""
    e = summary["exact"]
    return {k: v for k, v in {
        "violations": summary["violations"], "errors": summary["errors"],
        "wrong": e["wrong"], "undecided": e["undecided_far_from_zero"],
        "solver_errors": e["solver_errors"], "harness_errors": summary["harness_errors"],
    }.items() if v}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", type=int, default=200)
    parser.add_argument("--exact", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--eager", action="store_true", help="op by op instead of compiled")
    parser.add_argument("--full", action="store_true",
                        help="every option and every kind of set for every architecture")
    parser.add_argument("--only-arch", type=int, help="check the architecture of one seed")
    parser.add_argument("--only-exact", type=int, help="check the exact case of one seed")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", help="append each report to this JSON-lines file; resume from it")
    parser.add_argument("--cache", help="a folder to keep compiled operations in across runs")
    args = parser.parse_args(argv)
    if args.only_arch is not None or args.only_exact is not None:
        kind, seed = ("arch", args.only_arch) if args.only_arch is not None else (
            "exact", args.only_exact)
        print(json.dumps(_task((kind, seed, not args.eager, args.full))[1], indent=1, default=str))
        return
    summary = run(args.architectures, args.exact, seed=args.seed, workers=args.workers,
                  jit=not args.eager, full=args.full, progress=args.progress, out=args.out,
                  cache_dir=args.cache)  # fmt: skip
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
