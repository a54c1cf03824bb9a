"""Backward passes over convolutional layers in patch form, for intermediate bounds.

Full CROWN bounds every neuron of every ReLU input with one backward row per neuron. When a
ReLU's input is computed from the network input by a chain of convolutions, elementwise affine
maps (bias, scale, normalisation) and activations, the row of a neuron is non-zero only on the
neuron's receptive field, so each row is kept as a window (a "patch") of every layer around
that field rather than a full-sized array: a convolution's transpose maps a patch of size P to
one of size (P - 1) * stride + kernel, and elementwise factors (slopes, scales, biases) are
cut out of their full maps at each neuron's window, zero outside the layer so padding drops
out; after each convolution's transpose the coefficients of window positions outside the layer
(its padding) are zeroed, as padding holds constants, not values of the layer below. The bounds
are the same as the full-sized pass, rounding allowance included (`jaxcert._rounding`, tracked
as in `_crown._backward`); the work per row is the receptive field's size instead of the
layer's. This is the patches mode of auto_LiRPA (Xu et al., 2020).

References:
  K. Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and
  Beyond", NeurIPS 2020.
"""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .._activations import is_zero
from .._rounding import lowered
from ..graph import read
from ._interval import Interval
from ._linear import affine, bias, canonical_kernel, conv_transpose, is_plain_conv, zeros_for
from ._spec import input_scale

_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "convert_element_type", "copy"}


@dataclass(frozen=True)
class _Layout:
    """Where a variable (with its batch axis of one) keeps its batch, feature and spatial axes."""

    batch: int
    feature: int
    spatial: tuple

    def to_channels_last(self, v):
        """(1, ...) in this layout -> (*spatial, features)."""
        return jnp.transpose(v, (*self.spatial, self.feature, self.batch))[..., 0]

    def from_channels_last(self, v):
        order = (*self.spatial, self.feature, self.batch)
        return jnp.transpose(v[..., None], np.argsort(order))


def conv_chain(net, var):
    """The equations computing `var` from the input, last first, if they form a patch chain.

    A patch chain is a sequence of plain convolutions (`is_plain_conv`), elementwise affine maps
    and activations, each with one input-dependent operand, with at least one convolution and one
    layout throughout. Returns (equations, layout), or None when `var` is computed otherwise
    (dense layers, reshapes, residual additions...).
    """
    producer = {out: eq for eq in net.equations for out in eq.outputs}
    chain, v = [], var
    while v is not net.graph.input_var:
        eq = producer.get(v)
        inputs = [u for u, dep in zip(eq.inputs, eq.variable) if dep] if eq else []
        if len(inputs) != 1 or not _in_chain(eq, inputs[0]):
            return None
        chain.append(eq)
        v = inputs[0]
    dims = [eq.params["dimension_numbers"] for eq in chain if is_plain_conv(eq)]
    specs = {spec for d in dims for spec in (d.lhs_spec, d.out_spec)}
    if len(specs) != 1:
        return None
    (spec,) = specs
    return chain, _Layout(spec[0], spec[1], tuple(spec[2:]))


def _in_chain(eq, operand):
    if eq.kind == "activation" or is_plain_conv(eq):
        return True
    return eq.primitive.name in _ELEMENTWISE and eq.outputs[0].shape == operand.shape


class _Windows:
    """Each target position's window in one layer: per spatial axis, window size and origin.

    The window of target position p starts at p * stride + offset (per axis) and has `size`
    elements; positions outside the layer read as zero.
    """

    def __init__(self, positions, size, stride, offset):
        self.positions, self.size, self.stride, self.offset = positions, size, stride, offset

    @classmethod
    def at(cls, positions):
        n = len(positions)
        return cls(positions, (1,) * n, (1,) * n, (0,) * n)

    def through_conv(self, window, strides, padding):
        """The windows in a convolution's input."""
        return _Windows(
            self.positions,
            tuple((p - 1) * s + k for p, s, k in zip(self.size, strides, window)),
            tuple(a * s for a, s in zip(self.stride, strides)),
            tuple(o * s - low for o, s, (low, _) in zip(self.offset, strides, padding)),
        )

    def cut(self, v):
        """v (*layer spatial, C) -> (num positions, *size, C), zero outside the layer."""
        n = len(self.positions)
        index, pads = [], []
        for d in range(n):
            i = (
                np.arange(self.positions[d])[:, None] * self.stride[d]
                + self.offset[d]
                + np.arange(self.size[d])[None, :]
            )
            low = max(0, -int(i.min()))
            pads.append((low, max(0, int(i.max()) + 1 - v.shape[d])))
            shape = [1] * (2 * n)
            shape[d], shape[n + d] = i.shape
            index.append((i + low).reshape(shape))
        padded = jnp.pad(v, [*pads, (0, 0)])
        cut = padded[tuple(index)]
        return cut.reshape(-1, *self.size, v.shape[-1])

    def inside(self, spatial, dtype):
        """(num positions, *size, 1): 1 where a window lies inside a layer of shape `spatial`."""
        return self.cut(jnp.ones((*spatial, 1), dtype))


_DENSE_ENTRIES = 1 << 20


def _patch_transpose(rows, kernel, strides, size):
    """A convolution's transpose from output patches (..., *patch, C_out) to input patches.

    Patches are small, so when the patch-to-patch map fits in `_DENSE_ENTRIES` entries it is
    built once as a dense matrix and applied by one matrix product (far faster on CPU than a
    convolution with few output positions); otherwise by `conv_transpose`.
    """
    n = len(strides)
    lead, patch = rows.shape[:2], rows.shape[2:]
    flat = rows.reshape(-1, *patch)
    padding = [(0, 0)] * n
    num_out, num_in = math.prod(patch), math.prod(size) * kernel.shape[n]
    if num_out * num_in <= _DENSE_ENTRIES:
        basis = jnp.eye(num_out, dtype=rows.dtype).reshape(num_out, *patch)
        matrix = conv_transpose(basis, kernel, strides, padding, size).reshape(num_out, -1)
        out = flat.reshape(flat.shape[0], -1) @ matrix
    else:
        out = conv_transpose(flat, kernel, strides, padding, size)
    return out.reshape(*lead, *size, kernel.shape[n])


def patch_bounds(net, env, example, chain, layout, relax):
    """Bounds of every element of the chain's output by backward passes in patch form.

    Args:
      net: the traced network.
      env: constant values of the equations (from `ibp_environment`).
      example: the input set of one example.
      chain, layout: from `conv_chain`.
      relax: maps an activation equation to its `Lines`.

    Returns:
      An Interval of the shape of the chain's output variable.
    """
    target = chain[0].outputs[0]
    lower = jax.vmap(lambda sign: _lower_bounds(env, example, chain, layout, relax, sign))(
        jnp.array([1.0, -1.0], target.dtype)
    )
    shape = tuple(target.shape[d] for d in layout.spatial) + (target.shape[layout.feature],)
    low, high = (layout.from_channels_last(b.reshape(shape)) for b in (lower[0], -lower[1]))
    return Interval(low, high)


def _lower_bounds(env, example, chain, layout, relax, sign):
    """Lower bounds of sign * (each element of the chain's output), in channels-last order."""
    target = chain[0].outputs[0]
    positions = tuple(target.shape[d] for d in layout.spatial)
    channels = target.shape[layout.feature]
    windows = _Windows.at(positions)
    num = math.prod(positions)
    n = len(positions)
    # rows: (position, channel) -> a window of coefficients (num, channels, *size, features)
    rows = sign * jnp.broadcast_to(
        jnp.eye(channels, dtype=target.dtype).reshape(1, channels, *(1,) * n, channels),
        (num, channels, *(1,) * n, channels),
    )
    constant = jnp.zeros((num, channels), target.dtype)
    scale = jnp.zeros((num, channels), target.dtype)  # magnitude of the terms, for rounding

    def cut(v):  # a variable-shaped array -> windows broadcast over the row channels
        return windows.cut(layout.to_channels_last(v))[:, None]

    def inside(var):  # zero the coefficients of window positions outside the layer of `var`
        return windows.inside(tuple(var.shape[d] for d in layout.spatial), target.dtype)[:, None]

    def dot(a, b):  # <a, b> and <|a|, |b|> over each row's window
        axes = tuple(range(2, a.ndim))
        return jnp.sum(a * b, axis=axes), jnp.sum(jnp.abs(a * b), axis=axes)

    for eq in chain:
        values = [read(env, v) for v in eq.inputs]
        if eq.kind == "activation":
            lines = relax(eq)
            for part, intercept in ((jnp.minimum(rows, 0), lines.upper_intercept),
                                    (jnp.maximum(rows, 0), lines.lower_intercept)):  # fmt: skip
                if not is_zero(intercept):  # e.g. ReLU's lower line
                    term, magnitude = dot(part, cut(intercept))
                    constant, scale = constant + term, scale + magnitude
            lower_slope, upper_slope = cut(lines.lower_slope), cut(lines.upper_slope)
            rows = rows * jnp.where(rows >= 0, lower_slope, upper_slope)
        elif eq.primitive.name == "conv_general_dilated":
            kernel = canonical_kernel(eq, values[1])
            strides, padding = eq.params["window_strides"], eq.params["padding"]
            inner = windows.through_conv(kernel.shape[:n], strides, padding)
            windows = inner
            # Positions in the padding are constant zeros, not values of the layer below: their
            # coefficients must not travel on through the next transpose.
            rows = _patch_transpose(rows, kernel, strides, inner.size) * inside(eq.inputs[0])
        else:  # elementwise affine: the bias adds a constant, rows scale by the diagonal
            term, magnitude = dot(rows, cut(bias(eq, values)))
            constant, scale = constant + term, scale + magnitude
            if eq.primitive.name in ("mul", "div"):
                (diagonal,) = jax.vjp(affine(eq, values), *zeros_for(eq))[1](
                    jnp.ones(eq.outputs[0].shape, target.dtype)
                )
                rows = rows * cut(diagonal)
            elif eq.primitive.name == "neg" or (eq.primitive.name == "sub" and eq.variable[1]):
                rows = -rows

    def window(v):  # an input-shaped array (no batch axis) -> windows
        return cut(v[None])

    scale = scale + input_scale(example, rows, window)
    return lowered(constant + example.minimum(rows, window), scale, target.dtype).reshape(-1)
