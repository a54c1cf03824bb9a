"""The network evaluated in float64 throughout: the second arithmetic a counterexample must
hold in before it is reported (besides the network's own, usually float32)."""

import jax
import jax.numpy as jnp
import numpy as np

from ..graph import bind, read


def forward_float64(net, x):
    """The network's outputs at one input x (shape `net.input_shape`, or with a leading 1),
    computed with the input, the weights, the constants and every cast in float64; a flat
    float64 NumPy array."""

    def wide(value):
        value = value if isinstance(value, jax.Array) else np.asarray(value)
        return value.astype(np.float64) if jnp.issubdtype(value.dtype, jnp.floating) else value

    def wide_param(value):  # e.g. convert_element_type's new_dtype, dot's preferred type
        floating = isinstance(value, np.dtype) and np.issubdtype(value, np.floating)
        return np.dtype(np.float64) if floating else value

    with jax.enable_x64(True):
        env = {v: wide(p) for v, p in zip(net.graph.param_vars, jax.tree.leaves(net.params))}
        env[net.graph.input_var] = wide(np.reshape(x, (1, *net.input_shape)))
        for eq in net.equations:
            values = [wide(read(env, v)) for v in eq.inputs]
            if eq.kind == "activation":
                env[eq.outputs[0]] = eq.activation.apply(*values)
                continue
            params = {k: wide_param(v) for k, v in eq.params.items()}
            outs = bind(eq.primitive, values, params)
            env.update(zip(eq.outputs, outs if eq.primitive.multiple_results else [outs]))
        return np.asarray(env[net.graph.output_var], np.float64).ravel()
