"""The affine map of a traced linear equation, its transpose, and its absolute value."""

import jax
import jax.numpy as jnp

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
        return eq.primitive.bind(*args, **eq.params)

    return f


def zeros_for(eq):
    """Zero arrays of the shapes of the equation's input-dependent operands."""
    return [jnp.zeros(v.shape, v.dtype) for v, var in zip(eq.inputs, eq.variable) if var]


def bias(eq, values):
    """f(0): the constant part of the affine map."""
    return affine(eq, values)(*zeros_for(eq))


def transpose(eq, values):
    """L^T as a function from an output cotangent to one cotangent per input-dependent operand."""
    _, vjp = jax.vjp(affine(eq, values), *zeros_for(eq))
    return vjp


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
    return primitive.bind(*args, **eq.params)
