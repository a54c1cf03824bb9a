"""Jitted optax train step, a minimal fitting loop, and accuracy."""

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._gaussian import gaussian_augmentation_loss


def make_train_step(
    apply_fn: Callable,
    optimizer: optax.GradientTransformation,
    loss_fn: Callable = gaussian_augmentation_loss,
    **loss_kwargs: Any,
) -> Callable:
    """Builds a jitted optimization step for use in any optax training loop.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``.
        optimizer: the optax optimizer.
        loss_fn: ``loss_fn(apply_fn, params, x, y, key, **loss_kwargs) -> scalar``.
        **loss_kwargs: fixed keyword arguments of ``loss_fn``, e.g. ``sigma=0.25``.

    Returns:
        ``step(params, opt_state, x, y, key) -> (params, opt_state, loss)``. The ``params`` and
        ``opt_state`` passed in are donated: use only the returned ones afterwards.
    """

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(
            apply_fn, params, x, y, key, **loss_kwargs
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def fit(
    apply_fn: Callable,
    params: Any,
    train_x: np.ndarray,
    train_y: np.ndarray,
    key: jax.Array,
    *,
    sigma: float,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    progress: Callable[[int, float], None] | None = None,
) -> Any:
    """Trains a classifier with Adam on Gaussian-augmented inputs.

    Each epoch visits the training set in a fresh random order (the last batch may be smaller);
    epoch ``e`` draws its shuffle and noise from ``jax.random.fold_in(key, e)``.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``.
        params: initial parameters (left intact; training works on a copy).
        train_x: training inputs, leading axis over examples.
        train_y: integer labels, one per input.
        key: a ``jax.random`` key (new-style or legacy uint32).
        sigma: standard deviation of the Gaussian noise added to inputs, >= 0 (0: standard
            training).
        epochs: number of passes over the training set.
        batch_size: examples per step.
        learning_rate: Adam step size.
        progress: optional ``progress(epoch, mean_loss)`` called after each epoch.

    Returns:
        The trained parameters.

    References:
        J. Cohen, E. Rosenfeld, J. Z. Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019.
    """
    n = len(train_x)
    if n == 0 or len(train_y) != n:
        raise ValueError(
            f"train_x and train_y must be non-empty with equal lengths, got {n} and {len(train_y)}"
        )
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    optimizer = optax.adam(learning_rate)
    step = make_train_step(apply_fn, optimizer, sigma=sigma)
    params = jax.tree.map(jnp.array, params)  # a copy, since step donates its input
    opt_state = optimizer.init(params)
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    for epoch in range(epochs):
        shuffle_key, noise_key = jax.random.split(jax.random.fold_in(key, epoch))
        order = jax.random.permutation(shuffle_key, n)
        losses = []
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start : start + batch_size]
            params, opt_state, loss = step(
                params, opt_state, train_x[idx], train_y[idx], jax.random.fold_in(noise_key, i)
            )
            losses.append(loss * len(idx))
        if progress is not None:
            progress(epoch, float(sum(losses)) / n)
    return params


@partial(jax.jit, static_argnums=0)
def _predict(apply_fn: Callable, params: Any, x: jax.Array) -> jax.Array:
    return jnp.argmax(apply_fn(params, x), axis=-1)


def accuracy(
    apply_fn: Callable, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1024
) -> float:
    """Fraction of inputs whose top logit is the label, computed in chunks.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``; must be hashable (it is a
            static argument of the jitted forward pass), as functions and bound methods are.
        params: its parameters.
        x: inputs, leading axis over examples.
        y: integer labels, one per input.
        batch_size: examples per forward pass.

    Returns:
        The accuracy in [0, 1].
    """
    if len(x) == 0 or len(y) != len(x):
        raise ValueError(f"x and y must be non-empty with equal lengths, got {len(x)} and {len(y)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    correct = sum(
        int(jnp.sum(_predict(apply_fn, params, x[i : i + batch_size]) == y[i : i + batch_size]))
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)
