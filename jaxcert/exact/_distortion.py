"""The minimal l_inf distortion that changes a network's class, by bisection on eps."""

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._sets import LinfBall
from ..graph import Network
from ._verify import verify


class Distortion(NamedTuple):
    """Bracket of the minimal adversarial distortion of one image.

    Attributes:
      robust_eps: the largest eps proved robust (the minimal distortion is above it).
      adversarial_eps: the smallest eps with a confirmed counterexample (inf if none up to the
        search limit); the minimal distortion is at most this.
      counterexample: the counterexample at `adversarial_eps`, or None.
      exact: whether the bracket is narrower than the tolerance (no "unknown" answer cut the
        search short).
    """

    robust_eps: float
    adversarial_eps: float
    counterexample: np.ndarray | None
    exact: bool


def minimal_distortion(
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    *,
    max_eps: float = 1.0,
    tol: float = 1e-3,
    lower: ArrayLike = 0.0,
    upper: ArrayLike = 1.0,
    **kwargs: Any,
) -> list[Distortion]:
    """Bracket, per image, the smallest l_inf perturbation that changes the class y.

    Bisection on eps with `verify` (which decides each eps exactly): a verified eps raises the
    lower end, a falsified one lowers the upper end and keeps its counterexample.

    Args:
      net: a traced network.
      x: inputs, shape (B, ...).
      y: the classes to keep, shape (B,).
      max_eps: the largest eps searched (> 0).
      tol: stop when the bracket is narrower than this (> 0).
      lower: data-domain lower bound, as in `LinfBall`.
      upper: data-domain upper bound.
      **kwargs: passed to `verify` (solver, time_limit, bounds, threads).

    Returns:
      A list of B `Distortion`s.

    References:
      Tjeng, Xiao, Tedrake, "Evaluating Robustness of Neural Networks with Mixed Integer
      Programming", ICLR 2019 (minimum adversarial distortion).
    """
    if not max_eps > 0 or not tol > 0:
        raise ValueError(f"max_eps and tol must be > 0, got {max_eps} and {tol}")
    x = jnp.asarray(x)
    y = np.asarray(y)
    out = []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]

        def decide(eps, xi=xi, yi=yi):
            spec = LinfBall(xi, eps, lower=lower, upper=upper)
            return verify(net, spec, yi, **kwargs)[0]

        robust, adversarial, example, exact = 0.0, np.inf, None, True
        first = decide(max_eps)
        if first.status == "verified":
            out.append(Distortion(max_eps, np.inf, None, True))
            continue
        if first.status == "falsified":
            adversarial, example = max_eps, first.counterexample
        high = max_eps
        while high - robust > tol:
            mid = 0.5 * (robust + high)
            answer = decide(mid)
            if answer.status == "verified":
                robust = mid
            elif answer.status == "falsified":
                high, adversarial, example = mid, mid, answer.counterexample
            else:
                exact = False
                break
        out.append(Distortion(robust, adversarial, example, exact and adversarial < np.inf))
    return out
