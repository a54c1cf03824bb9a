"""The affine map of a traced linear equation, its transpose, and its absolute value."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..graph import bind, read

_MULTIPLICATIVE = {"mul", "dot_general", "conv_general_dilated", "div"}


def affine(eq, values):
    """f(*inputs) = the equation's output, as a function of its input-dependent operands.

    `values` holds the constant operands (arrays); input-dependent slots are ignored. f is affine:
    f(v) = L(v) + f(0), where L is linear.
    """
    slots = [i for i, var in enumerate(eq.variable) if var]

    def f(*inputs):
        args = list(values)
        for i, v in zip(slots, inputs):
            args[i] = v
        return bind(eq.primitive, args, eq.params)

    return f


def zeros_for(eq):
    """Zero arrays of the shapes of the equation's input-dependent operands."""
    return [jnp.zeros(v.shape, v.dtype) for v, var in zip(eq.inputs, eq.variable) if var]


def bias(eq, values):
    """f(0): the constant part of the affine map."""
    return affine(eq, values)(*zeros_for(eq))


def dot_rows(rows, value):
    """<row_k, value> and <|row_k|, |value|> for each row, value broadcast against the rows.

    A value shared by every row takes two matrix-vector products: on 2 CPU cores they made CROWN
    over boxes of a 5-50x6-5 network twice as fast as products summed element by element (0.30
    against 0.61 ms per box).
    """
    dtype = jnp.result_type(rows, value)
    flat = rows.reshape(rows.shape[0], -1).astype(dtype)
    one_row = (1, *rows.shape[1:])
    if jnp.broadcast_shapes(jnp.shape(value), one_row) != one_row:  # one value per row
        products = flat * jnp.broadcast_to(value, rows.shape).reshape(flat.shape)
        return jnp.sum(products, axis=1), jnp.sum(jnp.abs(products), axis=1)
    value = jnp.broadcast_to(value, one_row).reshape(-1).astype(dtype)
    return flat @ value, jnp.abs(flat) @ jnp.abs(value)


def backward_step(eq, env, rows):
    """A linear equation in a backward pass: rows on its output -> rows on its inputs.

    Args:
      eq: a linear equation.
      env: the values of its constant operands (e.g. from `ibp_environment`).
      rows: (K, *output shape), the coefficients of linear functions of the output.

    Returns:
      (term, magnitude, inputs, grads): <row_k, bias> and <|row_k|, |bias|> (shape (K,)), the
      input-dependent operands, and the rows on each of them, L^T rows.
    """
    values = [read(env, v) for v in eq.inputs]
    term, magnitude = dot_rows(rows, bias(eq, values))
    inputs = [v for v, var in zip(eq.inputs, eq.variable) if var]
    return term, magnitude, inputs, transpose_rows(eq, values)(rows)


def transpose(eq, values):
    """L^T as a function from an output cotangent to one cotangent per input-dependent operand."""
    _, vjp = jax.vjp(affine(eq, values), *zeros_for(eq))
    return vjp


def transpose_rows(eq, values):
    """L^T applied to a stack of rows: (K, *output shape) -> one (K, *input shape) per operand.

    Convolutions of the input go through `conv_transpose`, several times faster on CPU than the
    vjp's dilated convolution; everything else is the vmapped vjp.
    """
    if is_plain_conv(eq):
        return _conv_rows_transpose(eq, values[1])
    return jax.vmap(transpose(eq, values))


def is_plain_conv(eq):
    """A convolution of the input by a constant kernel, without dilation or feature groups."""
    p = eq.params
    return (
        eq.primitive.name == "conv_general_dilated"
        and tuple(eq.variable) == (True, False)
        and all(d == 1 for d in (*p["lhs_dilation"], *p["rhs_dilation"]))
        and p["feature_group_count"] == 1
        and p["batch_group_count"] == 1
    )


def canonical_kernel(eq, kernel):
    """A plain convolution's kernel as (*window, in features, out features)."""
    rhs = eq.params["dimension_numbers"].rhs_spec
    return jnp.transpose(kernel, (*rhs[2:], rhs[1], rhs[0]))


def _conv_rows_transpose(eq, kernel):
    dims = eq.params["dimension_numbers"]
    lhs, out = dims.lhs_spec, dims.out_spec
    in_shape = eq.inputs[0].shape
    spatial = tuple(in_shape[d] for d in lhs[2:])
    to_canonical = (0, *(1 + d for d in (out[0], *out[2:], out[1])))
    from_canonical = np.argsort((0, *(1 + d for d in (lhs[0], *lhs[2:], lhs[1]))))
    k = canonical_kernel(eq, kernel)

    def apply(rows):
        y = jnp.transpose(rows, to_canonical)
        y = y.reshape(y.shape[0], *y.shape[2:])
        x = conv_transpose(y, k, eq.params["window_strides"], eq.params["padding"], spatial)
        return [jnp.transpose(x[:, None], from_canonical)]

    return apply


def conv_transpose(y, kernel, strides, padding, in_spatial):
    """The input cotangent of a strided convolution, as one stride-1 convolution.

    For x -> conv(x, kernel) with the given strides and (low, high) padding, no dilation and one
    feature group, in channels-last layout: y (N, *out window positions, C_out) and kernel
    (*window, C_in, C_out) give (N, *in_spatial, C_in). Input positions u = o * s + k split into
    s phases by u mod s; each phase is a stride-1 correlation of y with the flipped taps
    k = phase + m * s, and all phases are computed by one convolution with s * C_in outputs,
    then interleaved ("sub-pixel" decomposition), instead of a convolution of y dilated by s.
    """
    n = len(strides)
    window = kernel.shape[:n]
    taps = [math.ceil(k / s) for k, s in zip(window, strides)]
    sub = kernel
    for d in reversed(range(n)):  # axis d becomes (phase, flipped tap)
        s, k, t = strides[d], window[d], taps[d]
        index = np.array([[r + (t - 1 - j) * s for j in range(t)] for r in range(s)]).reshape(-1)
        mask = (index < k).astype(kernel.dtype).reshape((-1,) + (1,) * (sub.ndim - d - 1))
        sub = jnp.take(sub, np.minimum(index, k - 1), axis=d) * mask
        sub = sub.reshape(*sub.shape[:d], s, t, *sub.shape[d + 1 :])
    c_in, c_out = kernel.shape[n], kernel.shape[n + 1]
    order = (*range(1, 2 * n, 2), 2 * n + 1, *range(0, 2 * n, 2), 2 * n)
    sub = jnp.transpose(sub, order).reshape(*taps, c_out, math.prod(strides) * c_in)
    canonical = (0, n + 1, *range(1, n + 1))
    kernel_spec = (n + 1, n, *range(n))
    phases = lax.conv_general_dilated(
        y, sub, (1,) * n, [(t - 1, t - 1) for t in taps],
        dimension_numbers=lax.ConvDimensionNumbers(canonical, kernel_spec, canonical),
    )  # fmt: skip
    q = phases.shape[1 : n + 1]
    phases = phases.reshape(y.shape[0], *q, *strides, c_in)
    order = (0, *(i for d in range(n) for i in (1 + d, 1 + n + d)), 1 + 2 * n)
    sizes = [a * s for a, s in zip(q, strides)]
    full = jnp.transpose(phases, order).reshape(y.shape[0], *sizes, c_in)
    config = [(0, 0, 0)]
    for (low, _), size, length in zip(padding, in_spatial, full.shape[1:]):
        config.append((-low, size + low - length, 0))
    return lax.pad(full, jnp.zeros((), full.dtype), [*config, (0, 0, 0)])


def abs_linear(eq, values, inputs):
    """|L|(inputs): the linear part with every coefficient replaced by its absolute value.

    Used for interval radii: a weight, kernel or scale becomes its absolute value, a subtraction
    an addition, a negation the identity; additive constants (biases) drop out.
    """
    name = eq.primitive.name
    if name == "neg":
        return inputs[0]
    args, it = [], iter(inputs)
    for value, var in zip(values, eq.variable):
        if var:
            args.append(next(it))
        elif name in _MULTIPLICATIVE:
            args.append(jnp.abs(value))
        else:
            args.append(jnp.zeros_like(value))
    primitive = jax.lax.add_p if name == "sub" else eq.primitive
    return bind(primitive, args, eq.params)
