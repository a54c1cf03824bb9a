"""Orderings that must hold between methods with the same intermediate bounds:
sampled minimum >= LP (triangle) >= any single linear relaxation; alpha-CROWN >= CROWN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampling import sample_set

import jaxcert as jc
from jaxcert.bounds._spec import margin_matrix


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_minimum_ge_lp_ge_every_linear_relaxation(seed):
    apply_fn, params = jc.models.init_model(
        {"kind": "mlp", "hidden": [10, 10], "num_classes": 4}, jax.random.key(seed), (6,)
    )
    x = jax.random.uniform(jax.random.key(10 + seed), (2, 6), minval=0.3, maxval=0.7)
    y = jnp.argmax(apply_fn(params, x), axis=1)
    net = jc.trace(apply_fn, params, x[:1])
    spec = jc.LinfBall(x, 0.08)
    C = margin_matrix(y, 4)
    relaxations = ("adaptive", "same-slope", "zero", "one")
    crown = {r: jc.bounds.crown(net, spec, C, relu=r).lower for r in relaxations}
    # The LP with each relaxation's own intermediate bounds is at least as tight as it.
    lp = {
        r: jc.bounds.lp(
            net, spec, C, intermediate=jc.bounds.intermediate_bounds(net, spec, relu=r)
        ).lower
        for r in relaxations
    }
    alpha = jc.bounds.alpha_crown(net, spec, C, steps=30).lower
    for i in range(2):
        points = sample_set("linf", x[i], 0.08, 5000, seed=seed)
        sampled = (np.asarray(apply_fn(params, points)) @ np.asarray(C[i]).T).min(axis=0)
        for r, bound in crown.items():
            assert np.all(sampled >= np.asarray(lp[r][i]) - 1e-5), r
            assert np.all(np.asarray(lp[r][i]) >= np.asarray(bound[i]) - 1e-5), r
    np.testing.assert_array_less(
        np.asarray(crown["adaptive"]) - 1e-6 * (1 + np.abs(crown["adaptive"])),
        np.asarray(alpha) + 1e-9,
    )
