"""Projected gradient descent (PGD) attacks: upper bounds on robust accuracy.

A certificate proves that no input in the set changes the class; an attack looks for one that
does. PGD (Madry et al., 2018) ascends the margin loss max_{j != y} f_j(z) - f_y(z) (Carlini and
Wagner, 2017) from random starts in the set, projecting back onto the l_inf or l_2 ball and the
data box after each step, and keeps the worst point seen per image. Clean accuracy >= PGD
accuracy >= certified accuracy on every set.

References:
  A. Madry, A. Makelov, L. Schmidt, D. Tsipras and A. Vladu, "Towards Deep Learning Models
  Resistant to Adversarial Attacks", ICLR 2018.
  N. Carlini and D. Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
  2017.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from . import _validate

NORMS = ("linf", "l2")
OBJECTIVES = ("margin", "cross-entropy")


def margin_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """max_{j != y} logits_j - logits_y per example: positive exactly when the class changes.

    Args:
      logits: (B, num_classes).
      y: integer classes (B,).

    Returns:
      The margin losses (B,) (Carlini and Wagner, 2017).
    """
    own = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return jnp.max(others, axis=1) - own


def pgd(apply_fn: Callable, params: Any, x: ArrayLike, y: ArrayLike, key: jax.Array,
        eps: ArrayLike, *, norm: str = "linf", steps: int = 40, step_size: ArrayLike | None = None,
        restarts: int = 1, objective: str = "margin", random_start: bool = False,
        lower: ArrayLike = 0.0, upper: ArrayLike = 1.0) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """The worst inputs PGD finds in {z : ||z - x|| <= eps, lower <= z <= upper}.

    Args:
      apply_fn: the classifier, `apply_fn(params, x) -> logits` on a batch.
      params: its parameters.
      x: clean inputs (B, ...), inside [lower, upper].
      y: classes to move away from (B,).
      key: a JAX PRNG key for the random starts.
      eps: radius (>= 0), a scalar or one per image.
      norm: "linf" (signed-gradient steps) or "l2" (normalised-gradient steps).
      steps: gradient steps per restart (>= 1).
      step_size: step length; default 2.5 * eps / steps (Madry et al.).
      restarts: starts per image (>= 1), uniform in the ball; the first starts at x itself
        unless random_start.
      objective: the loss ascended: "margin" (`margin_loss`, for evaluation) or
        "cross-entropy" (for adversarial training, as in Madry et al.).
      random_start: start every restart at a random point (Madry et al.'s training attack).
      lower, upper: the data box.

    Returns:
      (z, loss): the points with the largest objective seen per image, and that objective;
      with "margin", loss > 0 means z is misclassified.
    """
    _validate.check_choice("norm", norm, NORMS)
    _validate.check_choice("objective", objective, OBJECTIVES)
    _validate.check_count("steps", steps)
    _validate.check_count("restarts", restarts)
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating batch of inputs (B, ...), got {x.shape}")
    _validate.check_finite("x", x)
    y = jnp.asarray(y)
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape (B={x.shape[0]},), got {y.shape}")
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
    ev = _validate.concrete(eps)
    if ev is not None and not np.all(np.isfinite(ev) & (ev >= 0)):
        raise ValueError(f"eps must be finite and >= 0, got {ev}")
    step = 2.5 * eps / steps if step_size is None else jnp.broadcast_to(step_size, eps.shape)
    lower = jnp.broadcast_to(jnp.asarray(lower, x.dtype), x.shape)
    upper = jnp.broadcast_to(jnp.asarray(upper, x.dtype), x.shape)
    options = (norm, steps, restarts, objective, bool(random_start))
    return _pgd(apply_fn, options, params, x, y, key, eps, step, lower, upper)


@partial(jax.jit, static_argnums=(0, 1))
def _pgd(apply_fn, options, params, x, y, key, eps, step, lower, upper):
    norm, steps, restarts, objective, random_start = options
    shape = (-1,) + (1,) * (x.ndim - 1)
    eps, step = eps.reshape(shape), step.reshape(shape)

    def project(z):
        delta = z - x
        if norm == "linf":
            delta = jnp.clip(delta, -eps, eps)
        else:
            size = jnp.sqrt(jnp.sum(delta**2, axis=tuple(range(1, x.ndim)), keepdims=True))
            delta = delta * jnp.minimum(1.0, eps / jnp.maximum(size, 1e-12))
        return jnp.clip(x + delta, lower, upper)  # clipping into the box stays in the ball

    def loss(z):
        logits = apply_fn(params, z)
        if objective == "margin":
            values = margin_loss(logits, y)
        else:
            values = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(values), values

    def direction(g):
        if norm == "linf":
            return jnp.sign(g)
        size = jnp.sqrt(jnp.sum(g**2, axis=tuple(range(1, x.ndim)), keepdims=True))
        return g / jnp.maximum(size, 1e-12)

    def keep(best, z, values):
        better = values > best[1]
        return jnp.where(better.reshape(shape), z, best[0]), jnp.where(better, values, best[1])

    def restart(best, r):
        cube, radius = jax.random.split(jax.random.fold_in(key, r))
        noise = jax.random.uniform(cube, x.shape, x.dtype, -1.0, 1.0)
        if norm == "l2":
            noise = direction(noise) * jax.random.uniform(radius, (x.shape[0], *shape[1:]))
        z = project(x + eps * noise if random_start else jnp.where(r == 0, x, x + eps * noise))

        def ascend(carry, _):
            z, best = carry
            (_, values), g = jax.value_and_grad(loss, has_aux=True)(z)
            best = keep(best, z, values)
            return (project(z + step * direction(g)), best), None

        (z, best), _ = jax.lax.scan(ascend, (z, best), length=steps)
        return keep(best, z, loss(z)[1]), None

    start = (x, jnp.full(x.shape[:1], -jnp.inf, x.dtype))
    best, _ = jax.lax.scan(restart, start, jnp.arange(restarts))
    return best
