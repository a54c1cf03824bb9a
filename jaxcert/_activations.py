"""The activations jaxcert can bound, as data: one entry per activation, read by every method.

The tracer (`jaxcert.graph`) records an activation as an equation `y = f(v, *constants)` with
the input-dependent operand v first and the entry that matched it; the bound methods never name
an activation, they ask its entry for:

* `apply(v, *constants)`: the function itself (the forward pass, float64 re-evaluation);
* `interval(lower, upper, *constants)`: the exact range of f over [lower, upper] (IBP);
* `params(lower, upper, *constants, option)` and `param_range(...)`: the parameters of its
  linear relaxation (a tuple of arrays) under a slope option, and the box alpha-CROWN may move
  them in;
* `lines(lower, upper, *constants, params)`: lines lower_slope * v + lower_intercept <= f(v) <=
  upper_slope * v + upper_intercept valid on [lower, upper] (CROWN, alpha-CROWN, the LP);
* `kink(*constants)`: for the piecewise-linear ones, (t, left slope, right slope, f(t)) with
  f(v) = f(t) + (left if v < t else right) (v - t), from which the LP and the MILP encode
  f = f(t) + left (v - t) + (right - left) relu(v - t) (exact for the MILP: one binary); None for
  smooth ones, which the MILP refuses by name.

Piecewise-linear activations with one breakpoint (ReLU and `max(v, c)`, `min(v, c)`, LeakyReLU,
`abs`) share `_kink`: the chord is one line and a line through the breakpoint with slope in
[left, right] the other (convex case; the mirror when concave), the CROWN relaxation of ReLU.
Sigmoid and tanh share `_s_shaped`: convex below 0 and concave above, each side gets a chord or
a tangent, and an interval across 0 gets the tangents through an end point, found by bisection
(Zhang et al., 2018); the tangent points are alpha-CROWN's parameters. Their lines and intervals
are widened by a rounding allowance, as f is computed in floating point.

Adding an activation is one entry in `ACTIVATIONS` (and a matcher in `PRIMITIVES` or `CALLS`).

References:
  H. Zhang, T.-W. Weng, P.-Y. Chen, C.-J. Hsieh and L. Daniel, "Efficient Neural Network
  Robustness Certification with General Activation Functions", NeurIPS 2018.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SLOPE_OPTIONS = ("adaptive", "same-slope", "zero", "one")


class Lines(NamedTuple):
    """lower_slope * v + lower_intercept <= f(v) <= upper_slope * v + upper_intercept."""

    lower_slope: jax.Array
    lower_intercept: jax.Array
    upper_slope: jax.Array
    upper_intercept: jax.Array


@dataclass(frozen=True, eq=False)
class Activation:
    """One activation's rules (module docstring)."""

    name: str
    apply: Callable
    interval: Callable
    params: Callable
    param_range: Callable
    lines: Callable
    kink: Callable | None = None


# ---------------------------------------------------------------- one breakpoint, piecewise linear

_KINK_SLACK = 16  # machine epsilons of the terms an intercept cancels


def _kink(name, apply, kink):
    """An entry for f(v) = f(t) + (left if v < t else right) (v - t); `kink(*constants)`."""

    def value(v, t, left, right, ft):
        return ft + jnp.where(v < t, left, right) * (v - t)

    def interval(lower, upper, *constants):
        t, left, right, ft = kink(*constants)
        f_l, f_u = apply(lower, *constants), apply(upper, *constants)  # as the network rounds
        if _where((left >= 0) & (right >= 0), True, False) is True:  # non-decreasing
            return f_l, f_u
        inside = (lower < t) & (t < upper)
        low = jnp.where(inside, jnp.minimum(jnp.minimum(f_l, f_u), ft), jnp.minimum(f_l, f_u))
        high = jnp.where(inside, jnp.maximum(jnp.maximum(f_l, f_u), ft), jnp.maximum(f_l, f_u))
        return low, high

    def param_range(lower, upper, *constants):
        _, left, right, _ = kink(*constants)
        low, high = jnp.minimum(left, right), jnp.maximum(left, right)
        return ((jnp.broadcast_to(low, lower.shape), jnp.broadcast_to(high, lower.shape)),)

    def params(lower, upper, *constants, option="adaptive"):
        t, left, right, ft = kink(*constants)
        (low, high), = param_range(lower, upper, *constants)
        if option == "adaptive":  # the slope of the longer side (CROWN, DeepPoly)
            slope = jnp.where(upper - t > t - lower, right, left)
        elif option == "same-slope":  # the chord's slope (Fast-Lin)
            f_l, f_u = value(lower, t, left, right, ft), value(upper, t, left, right, ft)
            slope = (f_u - f_l) / jnp.where(upper > lower, upper - lower, 1)
        else:
            slope = low if option == "zero" else high
        return (jnp.broadcast_to(jnp.clip(slope, low, high), lower.shape),)

    def lines(lower, upper, *constants, params):
        t, left, right, ft = kink(*constants)
        (slope,) = params
        f_l, f_u = value(lower, t, left, right, ft), value(upper, t, left, right, ft)
        unstable = (lower < t) & (upper > t)
        chord = jnp.where(unstable, (f_u - f_l) / jnp.where(unstable, upper - lower, 1), 0)
        exact = jnp.where(lower >= t, right, left)  # a stable neuron: f is linear on [l, u]
        # Each intercept cancels terms as large as |f(l)| (the chord's) or |f(t)| (the lines
        # through the kink): their rounding, a few epsilons of those, moves it outwards. Where
        # they are zero by construction (ReLU: t = f(t) = left = 0) nothing is computed, and a
        # zero intercept is the number 0.0, which the backward passes skip.
        eps = _KINK_SLACK * float(np.finfo(np.dtype(lower.dtype)).eps)
        origin = is_zero(t) and is_zero(ft)
        kink_intercept = 0.0 if origin else ft - slope * t
        exact_intercept = 0.0 if origin else ft - exact * t
        kink_slack = 0.0 if origin else eps * jnp.abs(ft)
        chord_slack = 0.0 if origin and is_zero(left) else eps * jnp.abs(f_l)
        chord_intercept = f_l - chord * lower
        convex = left <= right  # the kink line below, the chord above; the mirror if concave

        def line(kink_side, on_kink, on_chord, exact_value):
            value = _where(kink_side, on_kink, on_chord)
            if is_zero(value) and is_zero(exact_value):
                return 0.0
            return jnp.where(unstable, value, exact_value)

        return _broadcast(
            Lines(
                line(convex, slope, chord, exact),
                line(convex, _minus(kink_intercept, kink_slack),
                     _minus(chord_intercept, chord_slack), _minus(exact_intercept, kink_slack)),
                line(_not(convex), slope, chord, exact),
                line(_not(convex), _plus(kink_intercept, kink_slack),
                     _plus(chord_intercept, chord_slack), _plus(exact_intercept, kink_slack)),
            ),  # fmt: skip
            lower.shape,
        )

    return Activation(name, apply, interval, params, param_range, lines, kink)


def _broadcast(lines, shape):
    """Every line array at the common shape of the lines and `shape` (the bounds'); a zero
    intercept stays the number 0.0."""
    shape = jnp.broadcast_shapes(shape, *(jnp.shape(x) for x in lines))
    return Lines(*(x if is_zero(x) else jnp.broadcast_to(x, shape) for x in lines))


def is_zero(x) -> bool:
    """Whether x is a constant known, while tracing, to be zero everywhere (a number or a
    concrete array, not a traced value)."""
    return isinstance(x, int | float | np.ndarray | np.generic) and not np.any(x)


def _where(condition, a, b):
    """jnp.where, or the branch itself when the condition is a constant."""
    if isinstance(condition, bool | np.bool_):
        return a if condition else b
    if isinstance(condition, np.ndarray) and condition.ndim == 0:
        return a if bool(condition) else b
    return jnp.where(condition, a, b)


def _not(condition):
    return not condition if isinstance(condition, bool | np.bool_) else ~condition


def _minus(a, b):
    return a if is_zero(b) else a - b


def _plus(a, b):
    return a if is_zero(b) else a + b


# ------------------------------------------------------------------- S-shaped: sigmoid and tanh

_BISECTION_STEPS = 40
_SMOOTH_SLACK = 16  # machine epsilons of the terms of a line or a range: f, f' are rounded


def _s_shaped(name, f, df):
    """An entry for an increasing f, convex on (-inf, 0] and concave on [0, inf)."""

    def tangent(d):
        return df(d), f(d) - df(d) * d

    def bisect(keep, lo, hi, keep_high):
        """The end of [lo, hi] where `keep` holds, narrowed to the boundary of `keep`."""

        def step(_, bracket):
            a, b = bracket
            mid = (a + b) / 2
            ok = keep(mid)
            if keep_high:
                return jnp.where(ok, a, mid), jnp.where(ok, mid, b)
            return jnp.where(ok, mid, a), jnp.where(ok, b, mid)

        a, b = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))
        return b if keep_high else a

    def upper_tangent_point(lower, upper):
        """(d, exists): the least d in [0, upper] whose tangent passes over (lower, f(lower)),
        so that the tangent at every point of [d, upper] lies above f on [lower, upper]."""

        def over(d):
            return f(d) + df(d) * (lower - d) >= f(lower)

        top = jnp.maximum(upper, 0)
        return bisect(over, jnp.zeros_like(top), top, keep_high=True), over(top)

    def lower_tangent_point(lower, upper):
        """(d, exists): the greatest d in [lower, 0] whose tangent passes under (upper,
        f(upper)), so that the tangent at every point of [lower, d] lies below f."""

        def under(d):
            return f(d) + df(d) * (upper - d) <= f(upper)

        bottom = jnp.minimum(lower, 0)
        return bisect(under, bottom, jnp.zeros_like(bottom), keep_high=False), under(bottom)

    def param_range(lower, upper):
        d_up, _ = upper_tangent_point(lower, upper)
        d_low, _ = lower_tangent_point(lower, upper)
        convex, concave = upper <= 0, lower >= 0
        low_range = (lower, jnp.where(convex, upper, jnp.maximum(d_low, lower)))
        up_range = (jnp.where(concave, lower, jnp.minimum(d_up, upper)), upper)
        return low_range, up_range

    def params(lower, upper, option="adaptive"):
        """The tangent points: the midpoint on a convex or concave side, else the points whose
        tangents pass through an end point (the option does not apply: it is for kinks)."""
        del option
        (_, low_high), (up_low, _) = param_range(lower, upper)
        mid = (lower + upper) / 2
        return jnp.where(upper <= 0, mid, low_high), jnp.where(lower >= 0, mid, up_low)

    def lines(lower, upper, params):
        d_low, d_up = params
        # whether the tangents through the end points exist (`*_tangent_point`, no bisection)
        top, bottom = jnp.maximum(upper, 0), jnp.minimum(lower, 0)
        up_exists = f(top) + df(top) * (lower - top) >= f(lower)
        low_exists = f(bottom) + df(bottom) * (upper - bottom) <= f(upper)
        convex, concave = upper <= 0, lower >= 0
        width = upper - lower
        chord = jnp.where(width > 0, (f(upper) - f(lower)) / jnp.where(width > 0, width, 1), 0)
        chord_intercept = f(lower) - chord * lower
        low_slope, low_intercept = tangent(d_low)
        up_slope, up_intercept = tangent(d_up)
        low_chord = concave | (~convex & ~low_exists)
        up_chord = convex | (~concave & ~up_exists)
        return _widened_lines(
            Lines(
                jnp.where(low_chord, chord, low_slope),
                jnp.where(low_chord, chord_intercept, low_intercept),
                jnp.where(up_chord, chord, up_slope),
                jnp.where(up_chord, chord_intercept, up_intercept),
            ),
            lower,
            upper,
        )

    def interval(lower, upper):
        low, high = f(lower), f(upper)
        return low - _allowance(jnp.abs(low), lower.dtype), high + _allowance(
            jnp.abs(high), lower.dtype
        )

    return Activation(name, f, interval, params, param_range, lines)


def _allowance(scale, dtype):
    return _SMOOTH_SLACK * float(np.finfo(np.dtype(dtype)).eps) * scale


def _widened_lines(lines, lower, upper):
    """Lines moved outwards by the rounding of their terms over [lower, upper]."""
    reach = jnp.maximum(jnp.abs(lower), jnp.abs(upper))
    low = jnp.abs(lines.lower_intercept) + jnp.abs(lines.lower_slope) * reach
    high = jnp.abs(lines.upper_intercept) + jnp.abs(lines.upper_slope) * reach
    return Lines(
        lines.lower_slope,
        lines.lower_intercept - _allowance(low, lower.dtype),
        lines.upper_slope,
        lines.upper_intercept + _allowance(high, lower.dtype),
    )


def _sigmoid_derivative(v):
    s = jax.nn.sigmoid(v)
    return s * (1 - s)


def _tanh_derivative(v):
    return 1 - jnp.tanh(v) ** 2


# ------------------------------------------------------------------------------- the registry


def _relu_kink(c):  # max(v, c) = c + relu(v - c): ReLU is c = 0
    return c, 0.0, 1.0, c


def _min_kink(c):  # min(v, c) = c - relu(c - v)
    return c, 1.0, 0.0, c


ACTIVATIONS = {
    "relu": _kink("relu", jnp.maximum, _relu_kink),
    "min": _kink("min", jnp.minimum, _min_kink),
    "leaky_relu": _kink(
        "leaky_relu", lambda v, a: jnp.where(v >= 0, v, a * v), lambda a: (0.0, a, 1.0, 0.0)
    ),
    "abs": _kink("abs", jnp.abs, lambda: (0.0, -1.0, 1.0, 0.0)),
    "sigmoid": _s_shaped("sigmoid", jax.nn.sigmoid, _sigmoid_derivative),
    "tanh": _s_shaped("tanh", jnp.tanh, _tanh_derivative),
}
"""Every activation by name."""

# Primitives that are an activation of their one input-dependent operand, the other operands
# (if any) constant: `max(v, c)`, `min(v, c)` (so `jax.nn.relu`, `relu6` and `jnp.clip`).
PRIMITIVES = {
    "max": "relu", "min": "min", "abs": "abs", "logistic": "sigmoid", "tanh": "tanh",
}  # fmt: skip

# Jitted library functions traced as activations instead of inlined, by their jit name: each
# maps `probe` (the function's value at a scalar input, its constant inputs as given) to the
# (activation, constant) pairs it applies in turn.
CALLS = {
    "leaky_relu": lambda probe: [("leaky_relu", -probe(-1.0))],
    "hard_tanh": lambda probe: [("relu", -1.0), ("min", 1.0)],
}
