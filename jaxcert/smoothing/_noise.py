"""Noise distributions for smoothing, each with its certified radius from pA_lower.

`scale` is the Gaussian's standard deviation sigma, the Laplace scale lambda, or the half-width
lambda of the uniform noise. Radii take the complement q = 1 - pA_lower (see
`jaxcert.stats`), so they keep their digits when pA_lower is close to 1.

References:
  J. Cohen, E. Rosenfeld, J. Z. Kolter, "Certified Adversarial Robustness via Randomized
  Smoothing", ICML 2019 (Gaussian, l2: R = sigma Phi^{-1}(pA_lower)).
  J. Teng, G.-H. Lee, Y. Yuan, "l1 Adversarial Robustness Certificates: a Randomized Smoothing
  Approach", 2020 (Laplace, l1: R = -lambda log(2 (1 - pA_lower))).
  G. Yang et al., "Randomized Smoothing of All Shapes and Sizes", ICML 2020 (uniform, l1:
  R = 2 lambda (pA_lower - 1/2)).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._stream import uniform_rows


class Noise(NamedTuple):
    """A smoothing distribution: a sampler, the rows of its stream, its radius rule, and the
    norm it certifies."""

    sample: Callable  # (key, shape, dtype) -> standardised noise (scale 1), jax.random's
    rows: Callable  # (key, first, count, size, dtype) -> rows [first, first + count) (`_stream`)
    radius: Callable  # (scale, q = 1 - pA_lower) -> certified radius where pA_lower > 1/2
    norm: str


def _gaussian_radius(scale, q):
    return -scale * jax.scipy.special.ndtri(q)


def _laplace_radius(scale, q):
    return -scale * jnp.log(2.0 * q)


def _uniform_radius(scale, q):
    return 2.0 * scale * (0.5 - q)


def _uniform_sample(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)


# The same distributions as rows of a key's stream (`_stream`), by jax.random's transforms of
# a uniform draw: sqrt(2) erfinv(u) on (-1, 1), sign(u) log1p(-|u|) on (-1, 1), u on [-1, 1).
def _gaussian_rows(key, first, count, size, dtype):
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    u = uniform_rows(key, first, count, size, dtype, low, 1.0)
    return jnp.asarray(np.sqrt(2), dtype) * lax.erf_inv(u)


def _laplace_rows(key, first, count, size, dtype):
    u = uniform_rows(key, first, count, size, dtype, -1.0 + jnp.finfo(dtype).epsneg, 1.0)
    return lax.sign(u) * lax.log1p(-lax.abs(u))


def _uniform_rows(key, first, count, size, dtype):
    return uniform_rows(key, first, count, size, dtype, -1.0, 1.0)


NOISES = {
    "gaussian": Noise(jax.random.normal, _gaussian_rows, _gaussian_radius, "l2"),
    "laplace": Noise(jax.random.laplace, _laplace_rows, _laplace_radius, "l1"),
    "uniform": Noise(_uniform_sample, _uniform_rows, _uniform_radius, "l1"),
}


def get_noise(name: str) -> Noise:
    """The `Noise` called `name`, or a ValueError listing the choices.

    Args:
      name: "gaussian", "laplace" or "uniform" (a key of `NOISES`).

    Returns:
      The `Noise`.

    Raises:
      ValueError: an unknown name.
    """
    if name not in NOISES:
        raise ValueError(f"noise must be one of {sorted(NOISES)}, got {name!r}")
    return NOISES[name]
