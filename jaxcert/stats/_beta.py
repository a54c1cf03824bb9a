"""The regularized incomplete beta function and its inverse, accurate in both tails.

`jax.scipy.special.betainc` loses digits for large parameters (n = 10^7 trials) and has no
inverse. Here the prefactor x^a (1-x)^b / B(a, b) is computed in Loader's saddle-point form
(no cancellation between huge log-gamma terms), the continued fraction runs to convergence,
and every probability is carried as a pair (x, 1 - x) whose smaller member keeps full
relative precision, so a tail probability near 1 is as exact as one near 0.

References:
  C. Loader, "Fast and accurate computation of binomial probabilities", 2000.
  W. Press et al., "Numerical Recipes", 3rd ed., 2007, section 6.4 (continued fraction).
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_CF_MAX_ITER = 100_000
_NEWTON_MAX_ITER = 100


def _stirlerr(z):
    """log Gamma(z + 1) - [(z + 1/2) log z - z + log(2 pi) / 2], for z >= 1."""
    big = jnp.maximum(z, 15.0)
    inv = 1.0 / big
    inv2 = inv * inv
    series = (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - inv2 / 1188) * inv2) * inv2) * inv2) * inv
    small = jnp.clip(z, 1.0, 15.0)
    direct = lax.lgamma(small + 1.0) - (small + 0.5) * jnp.log(small) + small - _HALF_LOG_2PI
    return jnp.where(z > 15.0, series, direct)


def _bd0(x, m):
    """Deviance term x log(x / m) + m - x, without cancellation when x is close to m."""
    d = x - m
    s = x + m
    near = jnp.abs(d) < 0.1 * s
    v = jnp.where(near, d / jnp.where(near, s, 1.0), 0.0)
    v2 = v * v
    term = 2.0 * x * v
    series = d * v
    for j in range(1, 12):
        term = term * v2
        series = series + term / (2 * j + 1)
    safe_m = jnp.where(m > 0, m, 1.0)
    direct = jnp.where(x > 0, x * jnp.log(x / safe_m), 0.0) + m - x
    direct = jnp.where(m > 0, direct, jnp.where(x > 0, jnp.inf, 0.0))
    return jnp.where(near, series, direct)


def log_beta_kernel(a, b, x, y):
    """log of x^a y^b / B(a, b) for a, b >= 1 and y = 1 - x (given separately)."""
    n = a + b
    return (
        _stirlerr(n)
        - _stirlerr(a)
        - _stirlerr(b)
        - _bd0(a, n * x)
        - _bd0(b, n * y)
        + 0.5 * jnp.log(a * b / n)
        - _HALF_LOG_2PI
    )


def _continued_fraction(a, b, x):
    """The continued fraction of I_x(a, b), modified Lentz; converges for x < (a+1)/(a+b+2)."""
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny * 1e3

    def guard(v):
        return jnp.where(jnp.abs(v) < tiny, tiny, v)

    d0 = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    init = (0, jnp.ones_like(x), d0, d0, jnp.zeros(x.shape, bool))

    def cond(state):
        it, _, _, _, done = state
        return jnp.logical_and(it < _CF_MAX_ITER, ~jnp.all(done))

    def body(state):
        it, c, d, h, done = state
        m = (it + 1).astype(dtype)
        m2 = 2.0 * m
        num = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2))
        d1 = 1.0 / guard(1.0 + num * d)
        c1 = guard(1.0 + num / c)
        h1 = h * d1 * c1
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))
        d2 = 1.0 / guard(1.0 + num * d1)
        c2 = guard(1.0 + num / c1)
        delta = d2 * c2
        h2 = h1 * delta
        new_done = done | (jnp.abs(delta - 1.0) <= eps)
        keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        return (it + 1, keep(c2, c), keep(d2, d), keep(h2, h), new_done)

    return lax.while_loop(cond, body, init)[3]


def beta_tails(a, b, x, y):
    """Both tails (I_x(a, b), 1 - I_x(a, b)) of the Beta(a, b) law at x, with y = 1 - x.

    The tail that the continued fraction computes directly (the smaller one) keeps full relative
    precision; the other is 1 minus it. Requires a, b >= 1 and x + y = 1.
    """
    direct = x * (a + b + 2.0) < a + 1.0
    a_, b_, x_ = jnp.where(direct, a, b), jnp.where(direct, b, a), jnp.where(direct, x, y)
    cf = _continued_fraction(a_, b_, x_)
    tail = jnp.exp(log_beta_kernel(a, b, x, y)) * cf / a_
    tail = jnp.clip(tail, 0.0, 1.0)
    lower = jnp.where(direct, tail, 1.0 - tail)
    upper = jnp.where(direct, 1.0 - tail, tail)
    lower = jnp.where(x <= 0, 0.0, jnp.where(y <= 0, 1.0, lower))
    upper = jnp.where(x <= 0, 1.0, jnp.where(y <= 0, 0.0, upper))
    return lower, upper


def _split(lo, hi):
    """A point between 0 <= lo < hi, geometric when the bracket spans orders of magnitude."""
    geometric = jnp.where(hi > 4.0 * lo, jnp.sqrt(lo * hi), 0.5 * (lo + hi))
    return jnp.where(lo > 0, geometric, hi / 1024.0)


def _bisect(lo_x, lo_y, hi_x, hi_y):
    """A bisection point of the bracket x in (lo_x, hi_x), y = 1 - x in (hi_y, lo_y)."""
    y = _split(hi_y, lo_y)
    x = _split(lo_x, hi_x)
    near_one, near_zero = lo_y <= 0.5, hi_x <= 0.5
    mid_x = jnp.where(near_one, 1.0 - y, jnp.where(near_zero, x, 0.5 * (lo_x + hi_x)))
    mid_y = jnp.where(near_one, y, jnp.where(near_zero, 1.0 - x, 0.5 * (lo_y + hi_y)))
    return mid_x, mid_y


def beta_isf(a, b, alpha):
    """The upper alpha-quantile of Beta(a, b) as a pair (q, 1 - q): P(Beta(a, b) > q) = alpha.

    Safeguarded Newton on log P(Beta > q), which is concave for a, b >= 1 (a log-concave law),
    so Newton steps approach the root monotonically from above; a step that leaves the bracket
    falls back to bisection. Both members of the pair are updated by the same step, so whichever
    is small keeps its relative precision (1 - p_lower near 1, p_lower near 0). Where the
    iteration stops before converging (extreme alpha such as 1e-100), the result is the
    bracket's upper end, the smallest q seen with P(Beta > q) <= alpha (q = 1 if none), which
    is not below the root.
    """
    a, b, alpha = jnp.broadcast_arrays(a, b, alpha)
    dtype = alpha.dtype
    eps = jnp.finfo(dtype).eps
    log_alpha = jnp.log(alpha)
    # Start from the normal approximation, written in both coordinates.
    n = a + b
    sd = jnp.sqrt(a * b / (n * n * (n + 1.0)))
    z = -jax.scipy.special.ndtri(alpha)
    x0, y0 = a / n + z * sd, b / n - z * sd
    inside = (x0 > 0) & (y0 > 0)
    x0, y0 = jnp.where(inside, x0, 0.5), jnp.where(inside, y0, 0.5)
    zero, one = jnp.zeros_like(alpha), jnp.ones_like(alpha)
    init = (0, x0, y0, zero, one, one, zero, jnp.zeros(alpha.shape, bool))

    def cond(state):
        return jnp.logical_and(state[0] < _NEWTON_MAX_ITER, ~jnp.all(state[-1]))

    def body(state):
        it, x, y, lo_x, lo_y, hi_x, hi_y, done = state
        _, upper = beta_tails(a, b, x, y)
        log_upper = jnp.log(upper)
        f = log_upper - log_alpha
        right = f <= 0  # the root is at or left of x
        lo_x, lo_y = jnp.where(right, lo_x, x), jnp.where(right, lo_y, y)
        hi_x, hi_y = jnp.where(right, x, hi_x), jnp.where(right, y, hi_y)
        log_pdf = log_beta_kernel(a, b, x, y) - jnp.log(x) - jnp.log(y)
        step = f * jnp.exp(log_upper - log_pdf)
        nx, ny = x + step, y - step
        # Compare in the smaller coordinate: the larger one may not resolve the step.
        inside = jnp.where(y < x, (ny > hi_y) & (ny < lo_y), (nx > lo_x) & (nx < hi_x))
        ok = jnp.isfinite(step) & inside
        bx, by = _bisect(lo_x, lo_y, hi_x, hi_y)
        nx, ny = jnp.where(ok, nx, bx), jnp.where(ok, ny, by)
        converged = done | (jnp.abs(step) <= 4 * eps * jnp.minimum(x, y))
        nx, ny = jnp.where(converged, x, nx), jnp.where(converged, y, ny)
        return (it + 1, nx, ny, lo_x, lo_y, hi_x, hi_y, converged)

    _, x, y, _, _, hi_x, hi_y, done = lax.while_loop(cond, body, init)
    return jnp.where(done, x, hi_x), jnp.where(done, y, hi_y)
