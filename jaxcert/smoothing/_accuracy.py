"""Certified accuracy of a smoothed classifier over a test set."""

import math
from typing import NamedTuple

import numpy as np
from jax.typing import ArrayLike

from .. import _validate


def certified_accuracy(radius: ArrayLike, correct: ArrayLike, radii: ArrayLike) -> np.ndarray:
    """Fraction of test points certified correct at each radius.

    A point counts at radius r when its prediction equals its label and its certified radius is
    at least r; an abstention counts as wrong. At r = 0 this is the smoothed classifier's accuracy.

    Args:
      radius: certified radii, shape (m,).
      correct: whether each prediction equals the label (False for ABSTAIN), shape (m,).
      radii: radii at which to evaluate, shape (R,).

    Returns:
      float64 NumPy array of shape (R,).

    References:
      Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
      ICML 2019, Section 4.
    """
    radius, correct, radii = _arrays(radius, correct, radii)
    return np.mean(correct[None, :] & (radius[None, :] >= radii[:, None]), axis=1)


def certified_accuracy_lower_bound(
    accuracy: ArrayLike, num_points: int, alpha: float, rho: float = 0.001
) -> np.ndarray:
    """A 1 - rho lower bound of the true certified accuracy, from the empirical one.

    Each certificate is wrong with probability at most alpha, independently across test points,
    so by Bernstein's inequality, with probability at least 1 - rho over the noise, at most a
    fraction alpha + sqrt(2 alpha (1 - alpha) log(1/rho) / m) + 2 log(1/rho) / (3 m) of the m
    certificates are wrong; the bound subtracts that fraction (and clips at 0).

    Args:
      accuracy: empirical certified accuracies (any shape), as from `certified_accuracy`.
      num_points: the number m of test points (>= 1).
      alpha: the failure probability each certificate was issued at, in (0, 1).
      rho: the failure probability of this bound, in (0, 1).

    Returns:
      float64 NumPy array of the shape of `accuracy`.

    References:
      Cohen, Rosenfeld, Kolter, ICML 2019, Appendix (certified accuracy of g on a test set);
      S. Bernstein's inequality for sums of bounded independent variables.
    """
    m = _validate.check_count("num_points", num_points)
    _validate.check_open_unit("alpha", alpha)
    _validate.check_open_unit("rho", rho)
    log_term = math.log(1.0 / rho)
    slack = alpha + math.sqrt(2.0 * alpha * (1.0 - alpha) * log_term / m) + 2 * log_term / (3 * m)
    return np.maximum(np.asarray(accuracy, np.float64) - slack, 0.0)


class AccuracyTable(NamedTuple):
    """Certified accuracy at several radii, with its high-probability lower bound."""

    radii: np.ndarray
    accuracy: np.ndarray
    lower_bound: np.ndarray
    num_points: int


def certified_accuracy_table(
    radius: ArrayLike, correct: ArrayLike, radii: ArrayLike, *, alpha: float, rho: float = 0.001
) -> AccuracyTable:
    """`certified_accuracy` at each radius together with `certified_accuracy_lower_bound`.

    Args:
      radius: certified radii, shape (m,).
      correct: whether each prediction equals the label, shape (m,).
      radii: radii at which to evaluate.
      alpha: the failure probability of each certificate.
      rho: the failure probability of the lower bound.

    Returns:
      An `AccuracyTable`.
    """
    radius, correct, radii = _arrays(radius, correct, radii)
    accuracy = certified_accuracy(radius, correct, radii)
    lower = certified_accuracy_lower_bound(accuracy, len(radius), alpha, rho)
    return AccuracyTable(radii, accuracy, lower, len(radius))


def _arrays(radius, correct, radii):
    radius = np.asarray(radius, np.float64).reshape(-1)
    correct = np.asarray(correct, bool).reshape(-1)
    radii = np.asarray(radii, np.float64).reshape(-1)
    if radius.shape != correct.shape:
        raise ValueError(
            f"radius and correct must have the same length, got {radius.size} and {correct.size}"
        )
    if radius.size == 0:
        raise ValueError("radius must hold at least one test point")
    _validate.check_finite("radii", radii)
    return radius, correct, radii
