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
    from above (Zhang et al., 2020, eq. 3); margin_lower has shape (B, num_classes - 1) in the
    row order of `margin_matrix` (classes j != y ascending).
    """
    others = jnp.array([[j for j in range(num_classes) if j != c] for c in range(num_classes)])
    z = jnp.zeros((y.shape[0], num_classes), margin_lower.dtype)
    return z.at[jnp.arange(y.shape[0])[:, None], others[y]].set(-margin_lower)


def ibp_loss(apply_fn, params, x, y, eps, kappa=0.5, *, lower=0.0, upper=1.0):
    """kappa * clean cross-entropy + (1 - kappa) * cross-entropy of the IBP worst-case logits.

    Pure, jit-able and differentiable in params; x is a batch, y its labels, eps the l_inf
    radius (the set is intersected with [lower, upper]).

    Returns:
      (loss, aux): the scalar loss and a dict with the clean and robust cross-entropies and the
      fraction of the batch IBP verifies (every margin lower bound > 0).

    References:
      Gowal et al., 2018.
    """
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

    The eps and kappa schedule of Gowal et al. (2018), as an optax schedule (step -> value).
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
