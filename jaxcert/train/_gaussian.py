"""Cross-entropy loss on noise-perturbed inputs (Gaussian, Laplace or uniform)."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from ..smoothing import get_noise


def cross_entropy_loss(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of a classifier on clean inputs.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``.
        params: its parameters.
        x: a batch of inputs.
        y: integer labels, one per input.

    Returns:
        The mean loss, a scalar.
    """
    logits = apply_fn(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def gaussian_augmentation_loss(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    sigma: float,
    noise: str = "gaussian",
) -> jax.Array:
    """Mean softmax cross-entropy of a classifier on inputs with isotropic noise.

    The loss is evaluated at ``x + sigma * eps`` with ``eps`` of ``x``'s dtype and no clipping to
    the data range, the training recipe of randomized smoothing; ``sigma = 0`` gives standard
    training. ``eps`` is the standardised noise that `jaxcert.smoothing.certify` draws for the
    same ``noise``: ``N(0, I)`` for "gaussian", unit-scale Laplace for "laplace", uniform on
    ``[-1, 1]`` for "uniform", so ``sigma`` is the ``sigma`` (scale) to certify with. Pure and
    jit-able; ``sigma`` is checked to be non-negative only when it is a concrete Python or NumPy
    number.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``.
        params: its parameters.
        x: a batch of inputs (floating point).
        y: integer labels, one per input.
        key: a ``jax.random`` key (new-style or legacy uint32) for the noise.
        sigma: scale of the noise, >= 0: the Gaussian's standard deviation, the Laplace scale or
            the uniform half-width.
        noise: "gaussian" (default), "laplace" or "uniform"; train with the noise the model will
            be certified with.

    Returns:
        The mean loss, a scalar.

    Raises:
        ValueError: ``sigma`` < 0, or an unknown ``noise``.

    References:
        J. Cohen, E. Rosenfeld, J. Z. Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019.
    """
    if isinstance(sigma, int | float | np.generic | np.ndarray) and not np.all(
        np.asarray(sigma) >= 0
    ):
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    eps = get_noise(noise).sample(key, x.shape, x.dtype)  # jax.random.normal for "gaussian"
    return cross_entropy_loss(apply_fn, params, x + sigma * eps, y)
