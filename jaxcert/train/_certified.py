"""Certified-training losses built on interval bound propagation, and ramp schedules.

References:
  S. Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
  Robust Models", 2018.
  H. Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust Neural
  Networks", ICLR 2020.
"""

import jax.numpy as jnp
import optax

from .._sets import LinfBall
from ..bounds._ibp import ibp
from ..bounds._spec import margin_matrix
from ..graph._trace import trace


def worst_case_logits(margin_lower, y, num_classes):
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


def ibp_loss(apply_fn, params, x, y, eps, kappa=0.5, *, lower=0.0, upper=1.0):
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
    if isinstance(kappa, int | float) and not 0 <= kappa <= 1:
        raise ValueError(f"kappa must lie in [0, 1], got {kappa!r}")
    logits = apply_fn(params, x)
    num_classes = logits.shape[-1]
    net = trace(apply_fn, params, x[:1])
    spec = LinfBall(x, eps, lower, upper)
    margins = ibp(net, spec, margin_matrix(y, num_classes)).lower
    clean = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    worst = worst_case_logits(margins, y, num_classes)
    robust = optax.softmax_cross_entropy_with_integer_labels(worst, y).mean()
    verified = jnp.mean(jnp.all(margins > 0, axis=1))
    loss = kappa * clean + (1 - kappa) * robust
    return loss, {"clean_loss": clean, "robust_loss": robust, "ibp_verified": verified}


def ramp_schedule(end_value, warmup_steps, ramp_steps, start_value=0.0):
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
