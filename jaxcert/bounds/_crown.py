"""Linear relaxation bounds (CROWN and its relatives) by backward propagation.

Each activation on [l, u] (bounds of its input z) is enclosed by two lines from its registry
entry (`jaxcert._activations`), lower_slope * z + lower_intercept <= f(z) <= upper_slope * z +
upper_intercept; for an unstable ReLU (l < 0 < u) they are alpha * z <= relu(z) <= u (z - l) /
(u - l) with alpha in [0, 1], and stable ReLUs are exact. To lower-bound <c, f(z)> over an input
set, the coefficients c travel backwards through the traced equations: a linear equation passes
its transpose (a vector-Jacobian product, so convolutions need no dense matrix) and adds
<c, bias>; an activation picks, per coefficient, the line that keeps the bound valid (the lower
line for a coefficient >= 0, the upper one otherwise) and adds its intercept. Where a variable
feeds several equations (a residual add) the coefficients add up. At the input the linear
function is minimised over the set (`InputSet.minimum`). Upper bounds are lower bounds of -c.

The free slope of piecewise-linear activations (alpha of unstable ReLUs) is the `relu` option:

* "adaptive": the slope of the longer side, 1 where u > -l, else 0 for ReLU (CROWN, DeepPoly);
* "same-slope": the chord's, u / (u - l) for ReLU (Fast-Lin, which equals the dual network of
  Wong and Kolter);
* "zero", "one": the least or the greatest slope allowed (0 or 1 for ReLU).

Sigmoid and tanh take their tangent lines whatever the option (Zhang et al., 2018).

Every bound is rounding-safe (`jaxcert._rounding`): the backward pass also sums the magnitudes
of the terms of each bound, |a|.|bias| per linear equation, |a|.|intercept| per activation and,
at the input set, |a|.max(|l|, |u|) plus the dual-norm term of a ball, and lowers the bound by
`allowance(magnitude, dtype)`. Intermediate bounds (full CROWN, patch mode and IBP alike) are
widened the same way before they decide anything, so a neuron counts as stable only when its
bound clears the allowance; `margins` and `certify` inherit the rule.

The bounds l, u of each activation's input come from the same backward pass started at that
input with one row per neuron (full CROWN, intersected with interval bounds), or from interval
bound propagation (CROWN-IBP). `alpha_crown` optimises the lines' parameters (the ReLU lower
slopes, the sigmoid/tanh tangent points) by gradient ascent instead.

References:
  H. Zhang, T.-W. Weng, P.-Y. Chen, C.-J. Hsieh and L. Daniel, "Efficient Neural Network
  Robustness Certification with General Activation Functions", NeurIPS 2018.
  T.-W. Weng et al., "Towards Fast Computation of Certified Robustness for ReLU Networks",
  ICML 2018.
  E. Wong and J. Z. Kolter, "Provable Defenses against Adversarial Examples via the Convex Outer
  Adversarial Polytope", ICML 2018.
  G. Singh, T. Gehr, M. Pueschel and M. Vechev, "An Abstract Domain for Certifying Neural
  Networks", POPL 2019.
  H. Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust Neural Networks",
  ICLR 2020.
  K. Xu et al., "Fast and Complete: Enabling Complete Neural Network Verification with Rapid and
  Massively Parallel Incomplete Verifiers", ICLR 2021.
"""

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from .._activations import SLOPE_OPTIONS, is_zero
from .._rounding import full_precision, lowered
from .._sets import InputSet
from .._sharding import shard_batch, unpad
from .._validate import check_choice, check_count
from ..graph import Network, read
from ._ibp import RULES, ibp_environment
from ._interval import Interval
from ._linear import backward_step, dot_rows
from ._patches import conv_chain, patch_bounds
from ._spec import check_activation_bounds, check_inputs, input_scale

INTERMEDIATE = ("crown", "ibp")


def _check_chunk(chunk):
    if chunk is not None:
        check_count("chunk", chunk)


def relaxation(eq, bound, env, option, params=None):
    """The lines of an activation equation on its input's bounds (`jaxcert._activations`).

    Args:
      eq: an activation equation.
      bound: the Interval of its input.
      env: the constant values (its constants are `eq.inputs[1:]`).
      option: the slope option (`crown`'s `relu`), used where `params` is None.
      params: the lines' parameters (alpha-CROWN's), or None for the option's.

    Returns:
      `Lines` (lower slope, lower intercept, upper slope, upper intercept).
    """
    constants = [read(env, v) for v in eq.inputs[1:]]
    if params is None:
        params = eq.activation.params(bound.lower, bound.upper, *constants, option=option)
    return eq.activation.lines(bound.lower, bound.upper, *constants, params=params)


def _backward(net, env, example, target, rows, relax, split=None, record=None):
    """Rounding-safe lower bounds of <row_k, target> over one example's input set.

    Args:
      example: the input set of one example; the other arguments as for `_linear_bound`.

    Returns:
      The K lower bounds, each lowered by the allowance of its terms (module docstring).
    """
    a, constant, scale = _linear_bound(net, env, target, rows, relax, split, record)
    return _minimum(example, a, constant, scale)


def _minimum(example, a, constant, scale):
    """The rounding-safe minimum of a . x + constant over the example's set, `scale` being the
    magnitude of the terms summed into the constant (`_linear_bound`)."""
    scale = scale + input_scale(example, a)
    return lowered(constant + example.minimum(a), scale, constant.dtype)


def _linear_bound(net, env, target, rows, relax, split=None, record=None):
    """Linear lower bounds a_k . x + constant_k <= <row_k, target> over the input set on which
    the relaxations hold (the backward pass, before its minimum over the set).

    Args:
      net: the traced network.
      env: constant values of the equations (from `ibp_environment`).
      target: the variable bounded; `rows` has shape (K, *target.shape).
      rows: the linear functions to bound.
      relax: maps an activation equation to its `Lines`.
      split: optional; maps an activation equation to (coefficients, constant) added where the
        pass reaches that activation's input: the Lagrangian terms of split constraints
        (beta-CROWN, `jaxcert.bounds.bound_relu_domains`), or None for that equation.
      record: optional dict; receives the rows reaching each activation equation's output
        (key: the equation) and the input (key: the input variable), (K, *shape).

    Returns:
      (a, constant, scale): a (K, *input shape without its batch axis), constant (K,), and
      the magnitude of the terms summed into the constant (K,), for the rounding allowance.
    """
    coefficients = {target: rows}
    constant = jnp.zeros(rows.shape[0], rows.dtype)
    scale = jnp.zeros(rows.shape[0], rows.dtype)
    for eq in reversed(net.equations):
        if eq.kind == "const" or eq.outputs[0] not in coefficients:
            continue
        a = coefficients.pop(eq.outputs[0])
        if eq.kind == "linear":
            term, magnitude, inputs, grads = backward_step(eq, env, a)
        else:
            if record is not None:
                record[eq] = a
            lines = relax(eq)
            term = magnitude = 0.0
            for part, intercept in ((jnp.minimum(a, 0), lines.upper_intercept),
                                    (jnp.maximum(a, 0), lines.lower_intercept)):  # fmt: skip
                if not is_zero(intercept):  # e.g. ReLU's lower line
                    t, m = dot_rows(part, intercept)
                    term, magnitude = term + t, magnitude + m
            inputs = [eq.inputs[0]]
            grads = [a * jnp.where(a >= 0, lines.lower_slope, lines.upper_slope)]
            extra = None if split is None else split(eq)
            if extra is not None:
                grads[0] = grads[0] + extra[0]
                term, magnitude = term + extra[1], magnitude + jnp.abs(extra[1])
        constant, scale = constant + term, scale + magnitude
        for v, g in zip(inputs, grads):
            coefficients[v] = coefficients[v] + g if v in coefficients else g
    a = coefficients[net.graph.input_var][:, 0]
    if record is not None:
        record[net.graph.input_var] = a
    return a, constant, scale


def _chunked(fn, rows, chunk):
    """fn(rows), evaluated `chunk` rows at a time with `lax.map` when chunk is given."""
    if chunk is None or rows.shape[0] <= chunk:
        return fn(rows)
    num = rows.shape[0]
    pad = -num % chunk
    padded = jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)])
    out = jax.lax.map(fn, padded.reshape(-1, chunk, *rows.shape[1:]))
    return out.reshape(-1)[:num]


def _two_sided(fn, rows, chunk, lower_only=False):
    """Interval of <row_k, .> from lower bounds of rows and of -rows (upper +inf if lower_only)."""
    k = rows.shape[0]
    if lower_only:
        lows = _chunked(fn, rows, chunk)
        return Interval(lows, jnp.full_like(lows, jnp.inf))
    lows = _chunked(fn, jnp.concatenate([rows, -rows]), chunk)
    return Interval(lows[:k], -lows[k:])


def _activation_bounds(net, example, relu, intermediate, chunk):
    """Constant values and the input bounds of every activation, for one example.

    Returns:
      (env, bounds): env as from `ibp_environment`, bounds a dict from each activation equation
      to the Interval of its input (shape (1, ...)).
    """
    lower, upper = example.box()
    box = Interval(lower[None], upper[None])
    env = ibp_environment(net, *box)
    activations = net.activations()
    if not isinstance(intermediate, str):  # given bounds, one Interval per activation
        return env, {
            eq: Interval(b.lower[None], b.upper[None]) for eq, b in zip(activations, intermediate)
        }
    if intermediate == "ibp":
        return env, {eq: env[eq.inputs[0]] for eq in activations}
    bounds = {}

    def relax(eq):
        return relaxation(eq, bounds[eq], env, relu)

    def activation_rule(eq, values):
        by_intervals = values[0]
        var = eq.inputs[0]
        chain = conv_chain(net, var)
        if chain is not None:
            by_crown = patch_bounds(net, env, example, *chain, relax)
        else:
            n = int(np.prod(var.shape))
            eye = jnp.eye(n, dtype=var.dtype).reshape(n, *var.shape)
            by_crown = _two_sided(lambda r: _backward(net, env, example, var, r, relax), eye, chunk)
        bound = Interval(
            jnp.maximum(by_intervals.lower, by_crown.lower.reshape(var.shape)),
            jnp.minimum(by_intervals.upper, by_crown.upper.reshape(var.shape)),
        )
        bounds[eq] = bound
        return RULES["activation"](eq, [bound, *values[1:]])

    net.interpret(box, {**RULES, "activation": activation_rule})
    return env, bounds


def _output_rows(net, C):
    """The specification rows (K, 1, *output_shape): C, or the identity when C is None."""
    out = net.graph.output_var
    n = int(np.prod(out.shape))
    rows = jnp.eye(n, dtype=out.dtype) if C is None else C.astype(out.dtype)
    return rows.reshape(rows.shape[0], *out.shape)


def _shape_result(net, bounds, C):
    if C is not None:
        return bounds
    shape = (bounds.lower.shape[0], *net.output_shape)
    return Interval(bounds.lower.reshape(shape), bounds.upper.reshape(shape))


def crown(
    net: Network,
    spec: InputSet,
    C: ArrayLike | None = None,
    *,
    relu: str = "adaptive",
    intermediate: str | Sequence[Interval] = "crown",
    chunk: int | None = None,
    lower_only: bool = False,
) -> Interval:
    """Linear relaxation bounds of the network's outputs (or of C @ outputs) over an input set.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set (`LinfBall`, `L2Ball`, `L1Ball`, `Box`) over a batch of B inputs.
      C: optional specification matrix (B, K, num_outputs); the bounds are then of C @ f(x),
        computed directly (tighter than bounding f and applying C).
      relu: lower slope of unstable ReLUs: "adaptive" (CROWN), "same-slope" (Fast-Lin, the Wong
        and Kolter dual network), "zero" or "one".
      intermediate: bounds of each ReLU's input: "crown" (a backward pass from that input with
        one row per neuron, intersected with interval bounds), "ibp" (CROWN-IBP), or bounds
        already computed (`intermediate_bounds`, valid over `spec`), which are used as given.
      chunk: if given, the backward passes handle at most this many rows at a time (less
        memory, more time).
      lower_only: bound the outputs from below only (half the work; the upper bounds are
        +inf). Intermediate bounds stay two-sided.

    Returns:
      An `Interval` of shape (B, *output_shape), or (B, K) with C.

    Raises:
      ValueError: for a malformed spec or C, or an unknown option.

    References:
      Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
      Functions", 2018; Weng et al., "Towards Fast Computation of Certified Robustness for ReLU
      Networks", 2018; Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust
      Neural Networks", 2020.
    """
    check_inputs(net, spec, C)
    check_choice("relu", relu, SLOPE_OPTIONS)
    given = None
    if isinstance(intermediate, str):
        check_choice("intermediate", intermediate, INTERMEDIATE)
    else:
        check_activation_bounds(net, spec, intermediate)
        given, intermediate = list(intermediate), "given"
    _check_chunk(chunk)
    (spec, C, given), batch = shard_batch((spec, C, given))
    result = _crown(net, spec, C, given, relu, intermediate, chunk, bool(lower_only))
    return _shape_result(net, unpad(result, batch), C)


@partial(jax.jit, static_argnums=(4, 5, 6, 7))
@full_precision
def _crown(net, spec, C, given, relu, intermediate, chunk, lower_only):
    def one(example, c, given):
        env, bounds = _activation_bounds(
            net, example, relu, intermediate if given is None else given, chunk
        )

        def relax(eq):
            return relaxation(eq, bounds[eq], env, relu)

        target = net.graph.output_var
        return _two_sided(
            lambda r: _backward(net, env, example, target, r, relax),
            _output_rows(net, c),
            chunk,
            lower_only,
        )

    return jax.vmap(one)(spec, C, given)


def intermediate_bounds(
    net: Network, spec: InputSet, *, method: str = "crown", relu: str = "adaptive"
) -> list[Interval]:
    """Bounds of every ReLU's input over an input set.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set over a batch of B inputs.
      method: "crown" (backward passes, intersected with interval bounds) or "ibp".
      relu: lower slope of unstable ReLUs in the backward passes (see `crown`).

    Returns:
      A list with one `Interval` per activation in `net.activations()` order, each of shape
      (B, *input shape of that ReLU without the leading 1).

    References:
      Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
      Functions", 2018.
    """
    check_inputs(net, spec)
    check_choice("method", method, INTERMEDIATE)
    check_choice("relu", relu, SLOPE_OPTIONS)
    spec, batch = shard_batch(spec)
    return unpad(_intermediate(net, spec, method, relu), batch)


@partial(jax.jit, static_argnums=(2, 3))
@full_precision
def _intermediate(net, spec, method, relu):
    def one(example):
        _, bounds = _activation_bounds(net, example, relu, method, None)
        return [Interval(bounds[eq].lower[0], bounds[eq].upper[0]) for eq in net.activations()]

    return jax.vmap(one)(spec)


def alpha_crown(
    net: Network,
    spec: InputSet,
    C: ArrayLike | None = None,
    *,
    steps: int = 20,
    optimizer: optax.GradientTransformation | None = None,
    intermediate: str = "crown",
    lower_only: bool = False,
) -> Interval:
    """CROWN bounds with the lower slopes of unstable ReLUs optimised by gradient ascent.

    Every slope in [0, 1] gives a sound bound, so each output keeps the best bound seen; the
    slopes start at CROWN's adaptive choice, hence the result is never looser than `crown`
    (adaptive, same intermediate bounds). Slopes are per neuron and per specification row (lower
    and upper bounds optimised separately); the intermediate bounds are fixed from `crown`.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set over a batch of B inputs.
      C: optional specification matrix (B, K, num_outputs).
      steps: number of gradient steps (0 gives CROWN).
      optimizer: an optax gradient transformation; default `optax.adam(0.1)`. It must be
        hashable and the same object between calls to avoid recompiling.
      intermediate: "crown" or "ibp", as in `crown`.
      lower_only: optimise and return lower bounds only (the upper bounds are +inf).

    Returns:
      An `Interval` of shape (B, *output_shape), or (B, K) with C.

    References:
      Xu et al., "Fast and Complete: Enabling Complete Neural Network Verification with Rapid
      and Massively Parallel Incomplete Verifiers", 2021.
    """
    check_inputs(net, spec, C)
    check_choice("intermediate", intermediate, INTERMEDIATE)
    check_count("steps", steps, minimum=0)
    (spec, C), batch = shard_batch((spec, C))
    result = _alpha_crown(net, spec, C, steps, optimizer, intermediate, bool(lower_only))
    return _shape_result(net, unpad(result, batch), C)


@partial(jax.jit, static_argnums=(3, 4, 5, 6))
@full_precision
def _alpha_crown(net, spec, C, steps, optimizer, intermediate, lower_only):
    optimizer = optax.adam(0.1) if optimizer is None else optimizer
    activations = net.activations()

    def one(example, c):
        env, bounds = _activation_bounds(net, example, "adaptive", intermediate, None)
        spec_rows = _output_rows(net, c)
        rows = spec_rows if lower_only else jnp.concatenate([spec_rows, -spec_rows])

        def lower_bounds(params):
            def relax(eq):
                return relaxation(eq, bounds[eq], env, None, params[activations.index(eq)])

            return _backward(net, env, example, net.graph.output_var, rows, relax)

        def loss(params):
            values = lower_bounds(params)
            return -jnp.sum(values), values

        ranges = []  # per activation, a (low, high) box for each of its parameters
        start = []  # the slope option "adaptive"'s parameters, one copy per row
        for eq in activations:
            constants = [read(env, v) for v in eq.inputs[1:]]
            low, high = bounds[eq]
            ranges.append(eq.activation.param_range(low, high, *constants))
            start.append(
                tuple(
                    jnp.broadcast_to(p, (rows.shape[0], *eq.inputs[0].shape))
                    for p in eq.activation.params(low, high, *constants, option="adaptive")
                )
            )

        def step(carry, _):
            params, state, best = carry
            (_, values), grads = jax.value_and_grad(loss, has_aux=True)(params)
            updates, state = optimizer.update(grads, state, params)
            params = jax.tree.map(
                lambda p, r: jnp.clip(p, *r),
                optax.apply_updates(params, updates),
                ranges,
            )
            return (params, state, _better(best, values)), None

        best = jnp.full(rows.shape[0], -jnp.inf, rows.dtype)
        (params, _, best), _ = jax.lax.scan(
            step, (start, optimizer.init(start), best), length=steps
        )
        lows = _better(best, lower_bounds(params))
        if lower_only:
            return Interval(lows, jnp.full_like(lows, jnp.inf))
        k = spec_rows.shape[0]
        return Interval(lows[:k], -lows[k:])

    return jax.vmap(one)(spec, C)


def _better(best, values):
    """The elementwise better lower bound; a NaN (a failed step) never replaces a bound."""
    return jnp.where(values > best, values, best)
