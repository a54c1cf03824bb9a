"""One training loss per method (with optional ReLU-stability and L1 terms) and its schedules."""

from collections.abc import Callable

import optax
from jax.typing import ArrayLike

from .. import _validate
from ._certified import (
    crown_ibp_loss,
    dual_loss,
    ibp_loss,
    l1_penalty,
    pgd_loss,
    ramp_schedule,
    relu_stability,
)
from ._gaussian import gaussian_augmentation_loss

METHODS = ("standard", "gaussian", "pgd", "ibp", "crown-ibp", "dual")


def training_loss(
    method: str,
    *,
    relu_stability_weight: float = 0.0,
    l1_weight: float = 0.0,
    stability_bounds: str = "ibp",
    pgd_steps: int = 10,
    lower: ArrayLike = 0.0,
    upper: ArrayLike = 1.0,
) -> Callable:
    """The loss of a training method, ready for `fit` and `make_train_step`.

    Methods: "standard" (cross-entropy), "gaussian" (noise augmentation for randomized
    smoothing), "pgd" (adversarial training), "ibp", "crown-ibp" and "dual" (certified
    training; see `ibp_loss`, `crown_ibp_loss`, `dual_loss`). Xiao et al.'s ReLU-stability and
    L1 terms can be added to any of them.

    Args:
      method: one of `METHODS`.
      relu_stability_weight: weight (>= 0) of `relu_stability` at the training eps.
      l1_weight: weight (>= 0) of `l1_penalty`.
      stability_bounds: "ibp" or "crown", the bounds `relu_stability` uses.
      pgd_steps: attack steps per training step for "pgd".
      lower, upper: the data box.

    Returns:
      ``loss_fn(apply_fn, params, x, y, key, eps=0.0, kappa=0.0, beta=1.0, sigma=0.0,
      noise="gaussian") -> (loss, aux)``: eps is the l_inf radius, kappa the weight of the clean
      loss, beta the CROWN-IBP weight, sigma the noise level and noise the kind of noise of
      "gaussian" augmentation ("gaussian", "laplace" or "uniform", see
      `gaussian_augmentation_loss`); each but noise may be given to `fit` as a schedule.
      aux holds the metrics of the parts, plus "relu_stability" and "unstable" when that term
      is on.
    """
    _validate.check_choice("training method", method, METHODS)
    _validate.check_nonnegative("relu_stability_weight", relu_stability_weight)
    _validate.check_nonnegative("l1_weight", l1_weight)
    box = {"lower": lower, "upper": upper}

    def loss_fn(
        apply_fn, params, x, y, key, eps=0.0, kappa=0.0, beta=1.0, sigma=0.0, noise="gaussian"
    ):
        if method in ("standard", "gaussian"):
            scale = sigma if method == "gaussian" else 0.0
            loss = gaussian_augmentation_loss(apply_fn, params, x, y, key, scale, noise)
            aux = {}
        elif method == "pgd":
            loss, aux = pgd_loss(apply_fn, params, x, y, key, eps, kappa, steps=pgd_steps, **box)
        elif method == "ibp":
            loss, aux = ibp_loss(apply_fn, params, x, y, eps, kappa, **box)
        elif method == "crown-ibp":
            loss, aux = crown_ibp_loss(apply_fn, params, x, y, eps, kappa, beta, **box)
        else:
            loss, aux = dual_loss(apply_fn, params, x, y, eps, kappa, **box)
        if relu_stability_weight:
            stability, parts = relu_stability(
                apply_fn, params, x, eps, bounds=stability_bounds, **box
            )
            loss = loss + relu_stability_weight * stability
            aux = {**aux, "relu_stability": stability, **parts}
        if l1_weight:
            loss = loss + l1_weight * l1_penalty(params)
        return loss, aux

    return loss_fn


def ramp_schedules(
    method: str,
    eps: float,
    total_steps: int,
    *,
    kappa: float = 0.5,
    warmup: float = 0.1,
    ramp: float = 0.5,
) -> dict[str, float | optax.Schedule]:
    """The usual schedules of certified training, as `fit` keyword arguments.

    eps is 0 for the first `warmup` fraction of the steps, then grows linearly to its final value
    over the next `ramp` fraction (Gowal et al., 2018); for "ibp" and "crown-ibp" kappa falls
    from 1 to its final value over the same ramp, and for "crown-ibp" beta falls from 1 to 0
    over all the steps after the warm-up (Zhang et al., 2020). "pgd" and "dual" ramp eps only;
    "standard" and "gaussian" get eps held at its final value, for a ReLU-stability term.

    Args:
      method: one of `METHODS`.
      eps: the final l_inf radius (>= 0).
      total_steps: the number of training steps (>= 1).
      kappa: the final weight of the clean loss.
      warmup, ramp: fractions of total_steps, each in [0, 1].

    Returns:
      A dict of keyword arguments for `fit` (schedules or constants).
    """
    _validate.check_choice("training method", method, METHODS)
    _validate.check_nonnegative("eps", eps)
    if not 0 <= warmup <= 1 or not 0 <= ramp <= 1:
        raise ValueError(f"warmup and ramp must be fractions in [0, 1], got {warmup}, {ramp}")
    if method in ("standard", "gaussian"):
        return {"eps": eps}
    start, length = int(warmup * total_steps), int(ramp * total_steps)
    schedules = {"eps": ramp_schedule(eps, start, length)}
    if method in ("ibp", "crown-ibp"):
        schedules["kappa"] = ramp_schedule(kappa, start, length, start_value=1.0)
    if method == "crown-ibp":
        schedules["beta"] = ramp_schedule(0.0, start, total_steps - start, start_value=1.0)
    return schedules
