"""Every bound is computed with full-precision float32 products, on every device.

On GPUs JAX's default float32 matrix product may round its operands to tensorfloat32 and on
TPUs to bfloat16: errors far beyond the rounding allowance (`jaxcert._rounding`). CPUs ignore
the setting, so what is checked here is that every product and convolution the bound functions
trace asks for the highest precision.
"""

import re

import jax
import jax.numpy as jnp
import pytest

import jaxcert as jc


def _cnn(params, x):
    kernel, w = params
    h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return jnp.tanh(jax.nn.relu(h).reshape(x.shape[0], -1) @ w)


@pytest.fixture(scope="module")
def cnn():
    keys = jax.random.split(jax.random.key(0), 3)
    params = (jax.random.normal(keys[0], (3, 3, 1, 2)), jax.random.normal(keys[1], (32, 3)))
    x = jax.random.uniform(keys[2], (1, 4, 4, 1))
    return jc.trace(_cnn, params, x), x


def _precisions(fn):
    """The precision of every product and convolution in fn's jaxpr, nested calls included."""
    text = str(jax.make_jaxpr(fn)())
    products = re.findall(r"(?:dot_general|conv_general_dilated)\[[^\]]*?precision=([^\s\]]+)",
                          text, flags=re.S)  # fmt: skip
    return products


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha_crown", "intermediate_bounds",
                                    "bound_input_domains"])  # fmt: skip
def test_every_bound_asks_for_full_precision_products(cnn, method):
    net, x = cnn
    spec = jc.LinfBall(x, 0.1)
    C = jnp.array([[[1.0, -1.0, 0.0]]])
    calls = {
        "ibp": lambda: jc.bounds.ibp(net, spec, C),
        "crown": lambda: jc.bounds.crown(net, spec, C),
        "alpha_crown": lambda: jc.bounds.alpha_crown(net, spec, C, steps=1),
        "intermediate_bounds": lambda: jc.bounds.intermediate_bounds(net, spec),
        "bound_input_domains": lambda: jc.bounds.bound_input_domains(
            net, x - 0.1, x + 0.1, C[0], jnp.zeros(1)),
    }  # fmt: skip
    found = _precisions(calls[method])
    assert found, "no product traced"
    assert all(p.startswith("(Precision.HIGHEST") for p in found), set(found)

