"""CERTIFY and PREDICT of Cohen, Rosenfeld and Kolter (2019), over a batch of images."""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from .. import _validate
from ..stats import binom_pvalue, lower_bound_pair
from ._noise import get_noise
from ._sampling import check_classifier, image_keys, sample_counts, shared_key

ABSTAIN = -1

_SELECTION, _ESTIMATION = 0, 1


class Certificate(NamedTuple):
    """Per-image result of `certify` (NumPy arrays, float64 statistics).

    Attributes:
      prediction: class of the smoothed classifier, or -1 (ABSTAIN); shape (B,).
      radius: certified radius (0 when abstaining), in the noise's norm; shape (B,).
      p_lower: lower confidence bound pA_lower of the top class's probability; shape (B,).
      counts: class counts of the estimation samples; shape (B, num_classes).
      selected: the class cA chosen from the n0 selection samples; shape (B,).
      num_samples: samples drawn per image, the n0 selection samples included: n0 + n, or
        fewer with `target_radius`; shape (B,).
    """

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    counts: np.ndarray
    selected: np.ndarray
    num_samples: np.ndarray


FIRST_LOOK = 100  # estimation samples at the first look of `certify(target_radius=...)`


def certify(apply_fn: Callable, params: Any, x: ArrayLike, key: jax.Array, *, sigma: float,
            num_classes: int, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int | None = None, noise: str = "gaussian", pb_upper: bool = False,
            compute_dtype: DTypeLike | None = None, target_radius: float | None = None,
            shared_noise: bool = False) -> Certificate:  # fmt: skip
    """Certify the smoothed classifier g(x) = argmax_c P(f(x + noise) = c) on a batch of images.

    For each image: the top class cA of n0 selection samples; then n fresh estimation samples
    (an independent key); pA_lower = the one-sided 1 - alpha Clopper-Pearson bound of cA's count.
    If pA_lower > 1/2, return cA with radius sigma * Phi^{-1}(pA_lower) (Gaussian noise, l2);
    otherwise ABSTAIN (-1). With probability >= 1 - alpha, g is constant (= cA) on the ball of
    that radius. With `pb_upper=True` (Gaussian only) the general radius
    sigma / 2 * (Phi^{-1}(pA_lower) - Phi^{-1}(pB_upper)) is used instead, where pB_upper bounds
    every other class (Bonferroni over alpha/2 for pA and alpha/2 shared by the other classes).

    With `target_radius=r` the question is "is g certified at radius r?", as in a certified
    accuracy table, and estimation samples are drawn in rounds: looks after 100, 200, 400, ...
    samples and at n (K looks in all). At each look, the one-sided Clopper-Pearson bounds at
    level alpha / K are formed from every sample so far; an image stops as soon as its lower
    bound gives a radius >= r (certified) or its upper bound gives a radius < r (it will not
    be). By the union bound over the K looks, with probability >= 1 - alpha every bound formed
    holds, so the reported radius (that of the image's last look, >= r or smaller) holds
    whichever look stopped it: the guarantee of CERTIFY, with n the most samples an image may
    use. Images far from r stop after a few hundred samples (sequential testing with the
    error spent over a fixed schedule of looks; see Horvath et al., "Boosting Randomized
    Smoothing with Variance Reduced Classifiers", ICLR 2022, and Voracek, "Treatment of
    Statistical Estimation Problems in Randomized Smoothing", 2024, for this use).

    Statistics are computed in float64 whatever the global x64 setting; the classifier runs in
    the dtype of x.

    Args:
      apply_fn: the base classifier, `apply_fn(params, x) -> logits` on a batch.
      params: its parameters.
      x: images, shape (B, ...).
      key: a jax.random key, or a batch of B keys (one per image, e.g. derived from the image's
        index in a data set so a result does not depend on batching).
      sigma: noise scale (> 0).
      num_classes: number of classes (>= 2).
      n0: selection samples per image (>= 1).
      n: estimation samples per image (>= 1).
      alpha: failure probability in (0, 1).
      batch_size: most noisy inputs in one forward pass, over all images (see
        `sample_counts`).
      noise: "gaussian" (l2 radius), "laplace" or "uniform" (l1 radius).
      pb_upper: use the two-class radius with an upper bound on the runner-up (Gaussian only).
      compute_dtype: run the classifier in this dtype, e.g. `jnp.bfloat16` on accelerators
        (see `sample_counts`); the certificate is then of the bfloat16 classifier.
      target_radius: if given (> 0), stop sampling each image once its certificate at this
        radius is decided (see above); n is then the largest number of estimation samples.
      shared_noise: draw each noise sample once for all images (`key` must be a single key;
        see `sample_counts`). Each certificate keeps its guarantee; certificates of different
        images are correlated.

    Returns:
      A `Certificate` of NumPy arrays.

    References:
      Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
      ICML 2019, Algorithm CERTIFY and Theorem 1.
    """
    num_classes = check_classifier(apply_fn, params, x, num_classes)
    _validate.check_open_unit("alpha", alpha)
    n0 = _validate.check_count("n0", n0)
    n = _validate.check_count("n", n)
    rule = get_noise(noise)
    if pb_upper and noise != "gaussian":
        raise ValueError(f"pb_upper=True needs noise='gaussian', got noise={noise!r}")
    if target_radius is not None:
        _validate.check_positive("target_radius", target_radius)
        if pb_upper:
            raise ValueError("target_radius cannot be combined with pb_upper=True")
    keys = shared_key(key) if shared_noise else image_keys(key, x.shape[0])
    common = dict(
        sigma=sigma,
        num_classes=num_classes,
        batch_size=batch_size,
        noise=noise,
        compute_dtype=compute_dtype,
        shared_noise=shared_noise,
    )
    fold = jax.random.fold_in if shared_noise else jax.vmap(jax.random.fold_in, (0, None))
    counts0 = sample_counts(apply_fn, params, x, fold(keys, _SELECTION), num=n0, **common)
    selected = np.asarray(jnp.argmax(counts0, axis=1))
    estimation = fold(keys, _ESTIMATION)
    if target_radius is None:
        counts = np.asarray(sample_counts(apply_fn, params, x, estimation, num=n, **common))
        used, level = np.full(len(selected), n), alpha
    else:
        counts, used = _sample_until_decided(
            apply_fn, params, x, estimation, selected, n, alpha, float(target_radius), common
        )
        level = alpha / len(look_schedule(n))  # the bounds of each image's last look
    n_a = counts[np.arange(len(selected)), selected]
    with jax.enable_x64(True):
        if pb_upper:
            p_lower, radius, certified = _two_class_radius(counts, selected, n, alpha, sigma)
        else:
            p_lower, q = (np.asarray(v) for v in lower_bound_pair(n_a, used, level))
            certified = p_lower > 0.5
            radius = np.asarray(rule.radius(float(sigma), jnp.asarray(q)))
    radius = np.where(certified, radius, 0.0)
    prediction = np.where(certified, selected, ABSTAIN)
    return Certificate(prediction, radius, p_lower, counts, selected, n0 + used)


def look_schedule(n):
    """Sample totals at the looks of `certify(target_radius=...)`: 100, 200, 400, ... then n."""
    looks, total = [], FIRST_LOOK
    while total < n:
        looks.append(total)
        total *= 2
    return [*looks, n]


def _sample_until_decided(apply_fn, params, x, keys, selected, n, alpha, target, common):
    """Estimation counts drawn in rounds until each image's certificate at `target` is decided.

    Returns the int32 counts and the estimation samples each image used; its bounds are
    those at level alpha / K, K = len(look_schedule(n)), of these counts.
    """
    looks = look_schedule(n)
    level = alpha / len(looks)
    radius_of = get_noise(common["noise"]).radius
    sigma = float(common["sigma"])
    batch = len(selected)
    counts = np.zeros((batch, common["num_classes"]), np.int32)
    used = np.zeros(batch, np.int64)
    active, drawn = np.arange(batch), 0
    for total in looks:
        # Undecided images, padded to a power of four (at most the batch) so that few batch
        # shapes are compiled; the padding repeats an image and is dropped.
        size = min(batch, 4 ** (((len(active) - 1).bit_length() + 1) // 2))
        rows = np.concatenate([active, np.full(size - len(active), active[-1])])
        new = sample_counts(
            apply_fn,
            params,
            x[rows],
            keys if common["shared_noise"] else keys[rows],
            num=total - drawn,
            start=drawn,
            **common,
        )
        counts[active] += np.asarray(new)[: len(active)]
        used[active] = drawn = total
        # Bounds for the whole batch (one shape, one compilation), kept for the active rows.
        n_a = counts[np.arange(batch), selected]
        with jax.enable_x64(True):
            low, low_q = (np.asarray(v) for v in lower_bound_pair(n_a, total, level))
            high_q = np.asarray(lower_bound_pair(total - n_a, total, level)[0])  # 1 - pA_upper
            radius_low, radius_high = (np.asarray(radius_of(sigma, jnp.asarray(v)))
                                       for v in (low_q, high_q))  # fmt: skip
        certified = (low > 0.5) & (radius_low >= target)
        hopeless = (high_q >= 0.5) | (radius_high < target)  # even pA_upper falls short
        active = active[~(certified | hopeless)[active]]
        if not active.size:
            break
    return counts, used


def _two_class_radius(counts, selected, n, alpha, sigma):
    """pA_lower, the radius sigma/2 (Phi^-1(pA_lower) - Phi^-1(pB_upper)), and where it holds."""
    batch, num_classes = counts.shape
    rows = np.arange(batch)
    p_lower, q = lower_bound_pair(counts[rows, selected], n, alpha / 2)
    # Upper bounds of every class at level alpha / (2 (K - 1)); the selected class is excluded.
    others_upper = lower_bound_pair(n - counts, n, alpha / (2 * (num_classes - 1)))[1]
    others_upper = others_upper.at[rows, selected].set(0.0)
    p_b = jnp.minimum(jnp.max(others_upper, axis=1), q)
    ndtri = jax.scipy.special.ndtri
    radius = 0.5 * sigma * (-ndtri(q) - ndtri(p_b))
    return np.asarray(p_lower), np.asarray(radius), np.asarray(p_lower > p_b)


def predict(apply_fn: Callable, params: Any, x: ArrayLike, key: jax.Array, *, sigma: float,
            num_classes: int, n: int = 1000, alpha: float = 0.001, batch_size: int | None = None,
            noise: str = "gaussian", compute_dtype: DTypeLike | None = None,
            shared_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """PREDICT: the smoothed classifier's class, or ABSTAIN (-1) when the vote is too close.

    Counts n noisy samples per image; with top two counts nA > nB, returns the top class if the
    two-sided binomial test of nA against nA + nB trials at p = 1/2 has p-value <= alpha, else
    ABSTAIN. The returned class differs from g(x) with probability at most alpha.

    Args:
      apply_fn: the base classifier, `apply_fn(params, x) -> logits` on a batch.
      params: its parameters.
      x: images, shape (B, ...).
      key: a jax.random key, or a batch of B keys.
      sigma: noise scale (> 0).
      num_classes: number of classes (>= 2).
      n: samples per image (>= 1).
      alpha: error level in (0, 1).
      batch_size: most noisy inputs in one forward pass, over all images (see
        `sample_counts`).
      noise: "gaussian", "laplace" or "uniform".
      compute_dtype: run the classifier in this dtype (see `sample_counts`).
      shared_noise: one noise draw for all images (`key` a single key; see `sample_counts`).

    Returns:
      `(prediction, counts)`: int NumPy array (B,) with -1 for ABSTAIN, and the counts.

    References:
      Cohen, Rosenfeld, Kolter, ICML 2019, Algorithm PREDICT.
    """
    check_classifier(apply_fn, params, x, num_classes)
    _validate.check_open_unit("alpha", alpha)
    n = _validate.check_count("n", n)
    counts = sample_counts(
        apply_fn,
        params,
        x,
        key,
        sigma=sigma,
        num=n,
        num_classes=num_classes,
        batch_size=batch_size,
        noise=noise,
        compute_dtype=compute_dtype,
        shared_noise=shared_noise,
    )
    counts = np.asarray(counts)
    order = np.argsort(-counts, axis=1, kind="stable")
    rows = np.arange(counts.shape[0])
    n_a, n_b = counts[rows, order[:, 0]], counts[rows, order[:, 1]]
    with jax.enable_x64(True):
        pvalue = np.asarray(binom_pvalue(n_a, n_a + n_b, 0.5))
    prediction = np.where(pvalue <= alpha, order[:, 0], ABSTAIN)
    return prediction, counts


def radius_cap(sigma: float, n: int, alpha: float, noise: str = "gaussian") -> float:
    """The largest radius `certify` can return with n samples: every sample votes for cA.

    Then pA_lower = alpha^(1/n), so for Gaussian noise the cap is sigma * Phi^{-1}(alpha^(1/n)):
    a certified-accuracy table is zero beyond it whatever the classifier.

    Args:
      sigma: noise scale (> 0).
      n: estimation samples (>= 1).
      alpha: failure probability in (0, 1).
      noise: "gaussian", "laplace" or "uniform".

    Returns:
      The cap as a Python float.
    """
    _validate.check_positive("sigma", sigma)
    _validate.check_count("n", n)
    _validate.check_open_unit("alpha", alpha)
    with jax.enable_x64(True):
        _, q = lower_bound_pair(n, n, alpha)
        return float(get_noise(noise).radius(float(sigma), q))
