"""Losses for certified and adversarial training, and the ramp schedules they use.

Each loss is pure, jit-able and differentiable in params, traces the model itself, and returns
(loss, aux metrics). The robust losses apply cross-entropy to worst-case logits assembled from
lower bounds of the margins f_y - f_j over the l_inf ball; they differ in the bound method.

References:
  S. Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
  Robust Models", 2018.
  H. Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust Neural
  Networks", ICLR 2020.
  E. Wong and J. Z. Kolter, "Provable Defenses against Adversarial Examples via the Convex Outer
  Adversarial Polytope", ICML 2018.
  K. Y. Xiao et al., "Training for Faster Adversarial Robustness Verification via Inducing ReLU
  Stability", ICLR 2019.
  A. Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from .._sets import LinfBall
from ..attacks import margin_loss, pgd
from ..bounds import breakpoints, crown, ibp, intermediate_bounds, margin_matrix
from ..graph import trace


def worst_case_logits(margin_lower: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
    """Logits z with z_y = 0 and z_j = -(lower bound of f_y - f_j) for j != y.

    Cross-entropy of these logits bounds the cross-entropy of every logit vector in the set
    from above (Zhang et al., 2020, eq. 3).

    Args:
      margin_lower: lower bounds of f_y - f_j, shape (B, num_classes - 1), in the row order of
        `margin_matrix` (classes j != y ascending).
      y: the labels (B,).
      num_classes: number of logits.

    Returns:
      The worst-case logits, shape (B, num_classes).
    """
    others = jnp.array([[j for j in range(num_classes) if j != c] for c in range(num_classes)])
    z = jnp.zeros((y.shape[0], num_classes), margin_lower.dtype)
    return z.at[jnp.arange(y.shape[0])[:, None], others[y]].set(-margin_lower)


def _check_weight(name, value):
    if isinstance(value, int | float) and not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _setup(apply_fn, params, x, y, eps, lower, upper):
    """Clean logits, the traced network, the l_inf ball and the margin specification."""
    logits = apply_fn(params, x)
    net = trace(apply_fn, params, x[:1])
    return logits, net, LinfBall(x, eps, lower, upper), margin_matrix(y, logits.shape[-1])


def _robust_loss(logits, margins, y, kappa, **verified):
    """kappa * clean + (1 - kappa) * worst-case cross-entropy, and the aux metrics."""
    clean = _cross_entropy(logits, y)
    robust = _cross_entropy(worst_case_logits(margins, y, logits.shape[-1]), y)
    aux = {"clean_loss": clean, "robust_loss": robust}
    aux.update({name: jnp.mean(jnp.all(m > 0, axis=1)) for name, m in verified.items()})
    return kappa * clean + (1 - kappa) * robust, aux


def ibp_loss(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array, eps: ArrayLike,
             kappa: float = 0.5, *, lower: ArrayLike = 0.0, upper: ArrayLike = 1.0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """kappa * clean cross-entropy + (1 - kappa) * cross-entropy of the IBP worst-case logits.

    Pure, jit-able and differentiable in params (the model is traced inside the loss).

    Args:
      apply_fn: the classifier, `apply_fn(params, x) -> logits`, built from layers that
        `jaxcert.trace` supports.
      params: its parameters.
      x: a batch of inputs (B, ...).
      y: integer labels (B,).
      eps: l_inf radius (>= 0), a scalar or one per image; the ball is intersected with
        [lower, upper].
      kappa: weight of the clean loss, in [0, 1].
      lower, upper: the data box.

    Returns:
      (loss, aux): the scalar loss and a dict with the clean and robust cross-entropies and the
      fraction of the batch IBP verifies (every margin lower bound > 0).

    References:
      Gowal et al., 2018.
    """
    _check_weight("kappa", kappa)
    logits, net, spec, C = _setup(apply_fn, params, x, y, eps, lower, upper)
    margins = ibp(net, spec, C).lower
    return _robust_loss(logits, margins, y, kappa, ibp_verified=margins)


def crown_ibp_loss(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array, eps: ArrayLike,
                   kappa: float = 0.0, beta: float = 1.0, *, lower: ArrayLike = 0.0,
                   upper: ArrayLike = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """Robust cross-entropy on margin bounds beta * CROWN-IBP + (1 - beta) * IBP.

    CROWN-IBP bounds the margins by one CROWN backward pass from the output, with interval
    bounds for the ReLUs inside; training starts at beta = 1 and ramps it down to 0 while eps
    ramps up (Zhang et al., 2020). Every convex combination of two lower bounds is a lower
    bound, so the loss bounds the worst-case cross-entropy from above for every beta.

    Args:
      apply_fn, params, x, y, eps, lower, upper: as in `ibp_loss`.
      kappa: weight of the clean loss, in [0, 1].
      beta: weight of the CROWN-IBP bound, in [0, 1] (0 gives `ibp_loss`).

    Returns:
      (loss, aux): the scalar loss and a dict with the clean and robust cross-entropies and the
      fractions of the batch verified by IBP and by CROWN-IBP.

    References:
      H. Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust Neural
      Networks", ICLR 2020.
    """
    _check_weight("kappa", kappa)
    _check_weight("beta", beta)
    logits, net, spec, C = _setup(apply_fn, params, x, y, eps, lower, upper)
    by_ibp = ibp(net, spec, C).lower
    by_crown = crown(net, spec, C, intermediate="ibp", lower_only=True).lower
    margins = beta * by_crown + (1 - beta) * by_ibp
    return _robust_loss(
        logits, margins, y, kappa, ibp_verified=by_ibp, crown_ibp_verified=by_crown
    )


def dual_loss(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array, eps: ArrayLike,
              kappa: float = 0.0, *, lower: ArrayLike = 0.0, upper: ArrayLike = 1.0
              ) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """Robust cross-entropy on the margin bounds of the dual network of Wong and Kolter.

    The dual network's objective equals CROWN with the upper line's slope as the lower slope
    ("same-slope", Fast-Lin), with every layer's ReLU bounds from the same backward passes; here
    those intermediate bounds are also intersected with interval bounds, which can only tighten
    them. Cost grows with the number of hidden neurons: meant for small networks.

    Args:
      apply_fn, params, x, y, eps, lower, upper: as in `ibp_loss`.
      kappa: weight of the clean loss, in [0, 1] (Wong and Kolter use 0).

    Returns:
      (loss, aux): the scalar loss and a dict with the clean and robust cross-entropies and the
      fraction of the batch the dual bound verifies.

    References:
      E. Wong and J. Z. Kolter, "Provable Defenses against Adversarial Examples via the Convex
      Outer Adversarial Polytope", ICML 2018.
    """
    _check_weight("kappa", kappa)
    logits, net, spec, C = _setup(apply_fn, params, x, y, eps, lower, upper)
    margins = crown(net, spec, C, relu="same-slope", lower_only=True).lower
    return _robust_loss(logits, margins, y, kappa, dual_verified=margins)


def pgd_loss(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array, key: jax.Array,
             eps: ArrayLike, kappa: float = 0.0, *, norm: str = "linf", steps: int = 10,
             step_size: ArrayLike | None = None, lower: ArrayLike = 0.0, upper: ArrayLike = 1.0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """Cross-entropy at the points PGD finds by ascending it (adversarial training).

    The attack's points are constants for the gradient (Danskin's theorem, as in Madry et al.).

    Args:
      apply_fn, params, x, y, lower, upper: as in `ibp_loss`.
      key: PRNG key for the attack's random start.
      eps: radius (>= 0) of the `norm` ball.
      kappa: weight of the clean loss, in [0, 1] (Madry et al. use 0).
      norm, steps, step_size: as in `jaxcert.attacks.pgd`.

    Returns:
      (loss, aux): the scalar loss and a dict with the clean and adversarial cross-entropies and
      the fraction of the batch PGD fails to misclassify.

    References:
      A. Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR
      2018.
    """
    _check_weight("kappa", kappa)
    z, _ = pgd(
        apply_fn,
        params,
        x,
        y,
        key,
        eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        objective="cross-entropy",
        random_start=True,
        lower=lower,
        upper=upper,
    )
    z = jax.lax.stop_gradient(z)
    adversarial_logits = apply_fn(params, z)
    clean = _cross_entropy(apply_fn(params, x), y)
    adversarial = _cross_entropy(adversarial_logits, y)
    robust = jnp.mean(margin_loss(adversarial_logits, y) < 0)
    aux = {"clean_loss": clean, "robust_loss": adversarial, "pgd_accuracy": robust}
    return kappa * clean + (1 - kappa) * adversarial, aux


def relu_stability(apply_fn: Callable, params: Any, x: jax.Array, eps: ArrayLike, *,
                   bounds: str = "ibp", lower: ArrayLike = 0.0, upper: ArrayLike = 1.0
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """The ReLU-stability loss: mean over the batch of sum over ReLUs of -tanh(1 + l * u).

    l and u bound each ReLU's input over the l_inf ball; the loss rewards l * u > 0 (a stable
    ReLU, which an exact verifier needs no binary variable for). Used with adversarial or
    certified training and an L1 penalty (`l1_penalty`) for weight sparsity.

    Args:
      apply_fn, params, x, eps, lower, upper: as in `ibp_loss` (no labels needed).
      bounds: how l, u are computed: "ibp" (the naive estimate of Xiao et al.) or "crown"
        (tighter, in the spirit of their improved estimate, and costlier).

    Returns:
      (loss, aux): the scalar loss and {"unstable": mean number of unstable ReLUs per input}.

    References:
      K. Y. Xiao, V. Tjeng, N. M. Shafiullah and A. Madry, "Training for Faster Adversarial
      Robustness Verification via Inducing ReLU Stability", ICLR 2019.
    """
    net = trace(apply_fn, params, x[:1])
    layers = intermediate_bounds(net, LinfBall(x, eps, lower, upper), method=bounds)
    loss = unstable = 0.0
    for b, t in zip(layers, breakpoints(net)):
        if t is None:  # a smooth activation: no breakpoint to keep inputs away from
            continue
        product = ((b.lower - t[0]) * (b.upper - t[0])).reshape(x.shape[0], -1)
        loss = loss - jnp.sum(jnp.tanh(1 + product), axis=1)
        unstable = unstable + jnp.sum(product < 0, axis=1)
    return jnp.mean(loss), {"unstable": jnp.mean(unstable)}


def l1_penalty(params: Any) -> jax.Array:
    """Sum of absolute weights over every parameter array with two or more axes (no biases).

    Xiao et al. (2019) pair it with `relu_stability`: sparse weights give tighter bounds.

    Args:
      params: a pytree of parameters.

    Returns:
      The penalty, a scalar.
    """
    leaves = [w for w in jax.tree.leaves(params) if jnp.ndim(w) >= 2]
    return sum(jnp.sum(jnp.abs(w)) for w in leaves)


def ramp_schedule(
    end_value: float, warmup_steps: int, ramp_steps: int, start_value: float = 0.0
) -> optax.Schedule:
    """start_value for `warmup_steps`, then linear to end_value over `ramp_steps`, then flat.

    The eps and kappa schedule of Gowal et al. (2018).

    Args:
      end_value: the value after the ramp.
      warmup_steps: steps held at start_value (>= 0).
      ramp_steps: steps of the linear ramp (>= 0).
      start_value: the value during warm-up.

    Returns:
      An optax schedule, step -> value.
    """
    if warmup_steps < 0 or ramp_steps < 0:
        raise ValueError("warmup_steps and ramp_steps must be >= 0")
    return optax.join_schedules(
        [
            optax.constant_schedule(start_value),
            optax.linear_schedule(start_value, end_value, max(ramp_steps, 1)),
        ],
        [warmup_steps],
    )
