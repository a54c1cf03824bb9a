"""Jitted optax train step, a minimal fitting loop, and accuracy."""

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _validate
from ._gaussian import gaussian_augmentation_loss


def _resolve(loss_kwargs, count):
    """Keyword arguments with every callable (a schedule) evaluated at the step count."""
    return {k: v(count) if callable(v) else v for k, v in loss_kwargs.items()}


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
        loss_fn: ``loss_fn(apply_fn, params, x, y, key, **loss_kwargs)`` returning a scalar or
            ``(scalar, aux dict)``, e.g. `gaussian_augmentation_loss` or a loss from
            `training_loss`.
        **loss_kwargs: keyword arguments of ``loss_fn``, e.g. ``sigma=0.25``; a callable value
            is a schedule (such as `ramp_schedule`), evaluated at the step count each step.

    Returns:
        ``step(params, opt_state, x, y, key, count=0) -> (params, opt_state, loss, aux)``, where
        ``count`` is the number of steps taken so far (what schedules read) and ``aux`` the
        loss's metrics (empty for a scalar loss). The ``params`` and ``opt_state`` passed in are
        donated: use only the returned ones afterwards.
    """

    def objective(params, x, y, key, count):
        out = loss_fn(apply_fn, params, x, y, key, **_resolve(loss_kwargs, count))
        return out if isinstance(out, tuple) else (out, {})

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y, key, count=0):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params, x, y, key, count)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, aux

    return step


def fit(
    apply_fn: Callable,
    params: Any,
    train_x: np.ndarray,
    train_y: np.ndarray,
    key: jax.Array,
    *,
    epochs: int,
    loss_fn: Callable = gaussian_augmentation_loss,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    progress: Callable[[int, Any, float, dict], None] | None = None,
    first_epoch: int = 0,
    opt_state: Any = None,
    checkpoint: Callable[[int, Any, Any], None] | None = None,
    **loss_kwargs: Any,
) -> Any:
    """Trains a classifier by minimising ``loss_fn`` (default: Gaussian augmentation).

    Each epoch visits the training set in a fresh random order (the last batch may be smaller);
    epoch ``e`` draws its shuffle and noise from ``jax.random.fold_in(key, e)``. Schedules
    among ``loss_kwargs`` (callables) are evaluated at the global step count.

    Args:
        apply_fn: the classifier, ``apply_fn(params, x) -> logits``.
        params: initial parameters (left intact; training works on a copy).
        train_x: training inputs, leading axis over examples.
        train_y: integer labels, one per input.
        key: a ``jax.random`` key (new-style or legacy uint32).
        epochs: number of passes over the training set.
        loss_fn: the loss, as in `make_train_step`.
        batch_size: examples per step.
        learning_rate: Adam step size (ignored when ``optimizer`` is given).
        optimizer: an optax optimizer; default ``optax.adam(learning_rate)``.
        progress: optional ``progress(epoch, params, mean_loss, mean_aux)`` called after each
            epoch, e.g. to evaluate ``params`` (which the next step donates: do not keep them).
        first_epoch: resume at this epoch (its shuffle, noise and schedule step count are those
            of an uninterrupted run); give the optimizer state saved with the parameters.
        opt_state: the optimizer state to resume from (default: a fresh one).
        checkpoint: optional ``checkpoint(epoch, params, opt_state)`` called after each epoch
            with host copies, to save them; ``fit(..., first_epoch=epoch + 1,
            opt_state=opt_state)`` from the saved parameters then continues the same run.
        **loss_kwargs: keyword arguments of ``loss_fn``, e.g. ``sigma=0.25`` (the noise level of
            Gaussian augmentation, 0 for standard training; ``noise="laplace"`` or
            ``"uniform"`` augments with that noise instead) or ``eps=ramp_schedule(...)``.

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
    _validate.check_count("epochs", epochs, minimum=0)
    _validate.check_count("batch_size", batch_size)
    if optimizer is None:
        _validate.check_positive("learning_rate", learning_rate)
    sigma = loss_kwargs.get("sigma")
    if isinstance(sigma, int | float):
        _validate.check_nonnegative("sigma", sigma)
    optimizer = optax.adam(learning_rate) if optimizer is None else optimizer
    step = make_train_step(apply_fn, optimizer, loss_fn, **loss_kwargs)
    _validate.check_count("first_epoch", first_epoch, minimum=0)
    params = jax.tree.map(jnp.array, params)  # a copy, since step donates its input
    opt_state = optimizer.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    count = first_epoch * -(-n // batch_size)
    for epoch in range(first_epoch, epochs):
        shuffle_key, noise_key = jax.random.split(jax.random.fold_in(key, epoch))
        order = jax.random.permutation(shuffle_key, n)
        totals = {}
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start : start + batch_size]
            params, opt_state, loss, aux = step(
                params,
                opt_state,
                train_x[idx],
                train_y[idx],
                jax.random.fold_in(noise_key, i),
                count,
            )
            count += 1
            for name, value in {"loss": loss, **aux}.items():
                totals[name] = totals.get(name, 0.0) + value * len(idx)
        if progress is not None:
            means = {name: float(total) / n for name, total in totals.items()}
            progress(epoch, params, means.pop("loss"), means)
        if checkpoint is not None:
            checkpoint(epoch, jax.device_get(params), jax.device_get(opt_state))
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
