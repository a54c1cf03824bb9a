"""Bounds of branch-and-bound sub-domains, with what the next split needs.

A domain of `jaxcert.exact`'s branch and bound is the problem's input set with split
constraints (activation splits) or a sub-box of it (input splits). Each function here bounds a
batch of domains in one jitted, vmapped call and returns, per domain, rounding-safe lower bounds
of every row of C @ f(x), branching scores for its next split, and a candidate point (a minimiser
of the bound's linear function, or the box centre) with its values C @ f(point).

Activation splits (beta-CROWN, Wang et al. 2021). A piecewise-linear activation with breakpoint
t is split into z >= t (+1) and z <= t (-1); the domain keeps the parent's bounds of every
activation's input, tightened where a split fixes a side (l := max(l, t) or u := min(u, t)), so
the activation is linear on the domain. The split constraints g_i = t - z_i <= 0 (+1) and
z_i - t <= 0 (-1) enter the backward pass with multipliers beta_i >= 0: for x in the domain,
c . f(x) >= c . f(x) + sum_i beta_i g_i(x), and the pass bounds the right side from below over
the whole input set with the activations' lines on the domain's bounds, a bound valid on the
domain for every beta >= 0 and every slope in range. Slopes (alpha) and beta are optimised
together by projected gradient ascent (optax), from the parent's values, and each row keeps
the best bound seen.

Branching scores. For an activation split, a free neuron whose bounds hold its breakpoint scores
the gap between its two lines at the breakpoint times the weight the best row puts on the line
that is the chord (the coefficient reaching the activation's output; after Bunel et al., 2020,
BaBSR); other neurons score -inf. For an input split, coordinate j scores |a_j| (u_j - l_j) with
a the best row's coefficients at the input (the "smear" of Bunel et al., 2020).

Input splits bound each box with CROWN, then take a few projected gradient steps on the slopes
of the last backward pass (each row its own, the intermediate bounds fixed: alpha-CROWN on the
output only); every slope in range gives a sound bound, and each row keeps its best with the
linear function that gave it.

References:
  S. Wang, H. Zhang, K. Xu, X. Lin, S. Jana, C.-J. Hsieh and J. Z. Kolter, "Beta-CROWN: Efficient
  Bound Propagation with Per-neuron Split Constraints for Neural Network Robustness
  Verification", NeurIPS 2021.
  K. Xu et al., "Fast and Complete: Enabling Complete Neural Network Verification with Rapid and
  Massively Parallel Incomplete Verifiers", ICLR 2021.
  R. Bunel, J. Lu, I. Turkaslan, P. H. S. Torr, P. Kohli and M. P. Kumar, "Branch and Bound for
  Piecewise Linear Neural Network Verification", JMLR 2020.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._rounding import full_precision, lowered
from .._sets import Box, InputSet
from .._sharding import shard_batch, single_cpu_device, unpad
from ..graph import Network, read
from ._crown import _activation_bounds, _backward, _linear_bound, _minimum, relaxation
from ._ibp import ibp_environment
from ._interval import Interval
from ._spec import input_scale

INPUT_CHUNK = 64  # boxes per step of `bound_input_domains` on one CPU device (see `_in_chunks`)
# Gradient steps on the output pass's slopes per box (`bound_input_domains`). On the ACAS-like
# network of benchmarks/bab.py 5 steps took 21% fewer domains than none (p5: 5,657 against
# 7,143; p1: 2,445 against 2,797), 2 steps 17%, 20 steps 22%.
INPUT_STEPS = 5
INPUT_OPTIMIZER = optax.adam(0.5)
# The largest first-layer matrix (`first_layer`) kept for rank-one split estimates: 64 MB.
FIRST_LAYER_ENTRIES = 1 << 24


def _in_chunks(fn, chunk):
    """jax.vmap(fn), evaluated `chunk` entries at a time (`lax.map`) on a single CPU device.

    On 2 CPU cores, full CROWN on 512 boxes of a 5-50x6-5 network took 0.47 ms per box in
    chunks of 64 against 0.95 ms in one vmapped step (whose (512, 100, 50) temporaries do not
    stay in cache); chunks of 16 or 32 were slower. Accelerators and sharded batches get the
    plain vmap.
    """
    vmapped = jax.vmap(fn)
    if not single_cpu_device():
        return vmapped

    def run(*args):
        size = jax.tree.leaves(args)[0].shape[0]
        if size <= chunk or size % chunk:
            return vmapped(*args)
        parts = jax.tree.map(lambda a: a.reshape(size // chunk, chunk, *a.shape[1:]), args)
        out = jax.lax.map(lambda part: vmapped(*part), parts)
        return jax.tree.map(lambda a: a.reshape(size, *a.shape[2:]), out)

    return run


class DomainBounds(NamedTuple):
    """Bounds of a batch of D domains for K rows of C.

    Attributes:
      lower: (D, K) rounding-safe lower bounds of C @ f(x) over each domain.
      scores: (D, N) branching scores: per activation neuron (-inf: not splittable) for
        activation splits, per input coordinate for input splits.
      point: (D, *input shape) a candidate point in each domain's input set.
      values: (D, K) C @ f(point), computed by the network in its own arithmetic.
      alpha: (D, K, N) the optimised slopes (activation splits), or None.
      beta: (D, K, N) the optimised multipliers (activation splits), or None.
      coefficients: (D, K, *input shape) the input coefficients a_k of each row's linear
        lower bound (input splits), or None: over the box, c_k . f(x) >= lower_k + a_k . (x - v_k)
        with v_k the box's vertex minimising a_k . x.
    """

    lower: jax.Array
    scores: jax.Array
    point: jax.Array
    values: jax.Array
    alpha: jax.Array | None = None
    beta: jax.Array | None = None
    coefficients: jax.Array | None = None


def neuron_layout(net: Network) -> list[tuple[int, int]]:
    """Where each activation's neurons lie in the flat neuron axis N of the domain functions.

    Args:
      net: a traced network.

    Returns:
      One (start, stop) range per activation equation, in `net.activations()` order; N is the
      last stop.
    """
    ranges, start = [], 0
    for eq in net.activations():
        size = math.prod(eq.inputs[0].shape)
        ranges.append((start, start + size))
        start += size
    return ranges


def _check_rows(net, C, thresholds=None):
    """Shapes of the rows C (K, outputs) and of their thresholds (K,), if given."""
    if getattr(C, "ndim", 0) != 2 or C.shape[1] != math.prod(net.output_shape):
        raise ValueError(f"C must have shape (K, {math.prod(net.output_shape)}), got "
                         f"{getattr(C, 'shape', None)}")  # fmt: skip
    if thresholds is not None and getattr(thresholds, "shape", None) != (C.shape[0],):
        raise ValueError(f"thresholds must have shape ({C.shape[0]},) (one per row of C), got "
                         f"{getattr(thresholds, 'shape', None)}")  # fmt: skip


def _check_domains(net, C, lower, upper, splits, thresholds=None):
    """Shapes of the activation-split domain arguments, checked before any compilation."""
    n = sum(stop - start for start, stop in neuron_layout(net))
    _check_rows(net, C, thresholds)
    for name, value in (("lower", lower), ("upper", upper), ("splits", splits)):
        if getattr(value, "ndim", 0) != 2 or value.shape[1] != n:
            shape = getattr(value, "shape", None)
            raise ValueError(f"{name} must have shape (D, {n}) (D domains, the network's {n} "
                             f"activation inputs), got {shape}")  # fmt: skip
    if not lower.shape[0] == upper.shape[0] == splits.shape[0]:
        raise ValueError(f"lower, upper and splits must hold the same number of domains, got "
                         f"{lower.shape[0]}, {upper.shape[0]} and {splits.shape[0]}")  # fmt: skip
    if not jnp.issubdtype(splits.dtype, jnp.integer):
        raise TypeError(f"splits must be integers (+1, -1 or 0), got {splits.dtype}")


class FirstLayer(NamedTuple):
    """The first activation's input as an affine function of the network's input over one
    example's set: z = jacobian @ x + offset, with n1 neurons and n inputs (`first_layer`).

    Attributes:
      jacobian: (n1, n).
      offset: (n1,).
      magnitude: (n1,) the magnitude of the terms of jacobian @ x + offset over the set, for
        the rounding allowance.
    """

    jacobian: jax.Array
    offset: jax.Array
    magnitude: jax.Array


class _NotAffine(Exception):
    """The first activation's input is not an affine function of the network's input."""


def first_layer(net: Network, example: InputSet) -> FirstLayer | None:
    """The first activation's input as an affine function of the input (`FirstLayer`), which
    makes `split_estimates` of its neurons rank-one updates; None where the network has no
    activation, where that input is not affine in the network's input, or where the matrix
    would hold more than FIRST_LAYER_ENTRIES entries.

    Args:
      net: a traced network.
      example: the input set of one example (no batch axis).

    Returns:
      A `FirstLayer`, or None.
    """
    activations = net.activations()
    if not activations:
        return None
    size = math.prod(activations[0].inputs[0].shape) * math.prod(net.input_shape)
    if size > FIRST_LAYER_ENTRIES:
        return None
    try:
        return _first_layer(net, example)
    except _NotAffine:
        return None


@jax.jit
@full_precision
def _first_layer(net, example):
    env = ibp_environment(net, *(b[None] for b in example.box()))
    var = net.activations()[0].inputs[0]
    n1 = math.prod(var.shape)

    def relax(eq):
        raise _NotAffine

    eye = jnp.eye(n1, dtype=var.dtype).reshape(n1, *var.shape)
    jacobian, offset, scale = _linear_bound(net, env, var, eye, relax)
    return FirstLayer(jacobian.reshape(n1, -1), offset, scale + input_scale(example, jacobian))


def bound_relu_domains(
    net: Network, example: InputSet, C: jax.Array, thresholds: jax.Array, lower: jax.Array,
    upper: jax.Array, splits: jax.Array, alpha: jax.Array | None, beta: jax.Array | None, *,
    steps: int = 20, optimizer: optax.GradientTransformation | None = None,
) -> DomainBounds:  # fmt: skip
    """Beta-CROWN bounds of D activation-split domains of one input set (module docstring).

    Args:
      net: a traced network whose activations are all piecewise linear.
      example: the input set of one example (no batch axis).
      C: the rows (K, num_outputs).
      thresholds: (K,): the best row of a domain is the one with the largest lower bound minus
        its threshold (its scores and point follow that row).
      lower, upper: (D, N) bounds of every activation's input over each domain (flat, in
        `neuron_layout` order); the splits tighten them. A domain where they cross, after the
        splits, is empty: its bounds are +inf.
      splits: (D, N) int8: +1 for z >= t, -1 for z <= t, 0 free.
      alpha: (D, K, N) starting slopes, or None for CROWN's adaptive ones.
      beta: (D, K, N) starting multipliers (>= 0), or None for zeros.
      steps: gradient steps (0: the bound with the starting values).
      optimizer: optax transformation; default `optax.adam(0.1)` (same object between calls to
        avoid recompiling).

    Returns:
      `DomainBounds` with alpha and beta.

    Raises:
      ValueError, TypeError: arguments of the wrong shape or type, before any compilation.
    """
    _check_domains(net, C, lower, upper, splits, thresholds)
    if alpha is None:
        alpha = _adaptive_slopes(net, example, lower, upper, splits, C.shape[0])
    if beta is None:
        beta = jnp.zeros_like(alpha)
    (lower, upper, splits, alpha, beta), count = shard_batch((lower, upper, splits, alpha, beta))
    out = _relu_domains(net, example, C, thresholds, lower, upper, splits, alpha, beta, steps,
                        optimizer)  # fmt: skip
    return unpad(out, count)


def _tightened(net, env, lower, upper, splits):
    """Per activation equation: the Interval of its input with the splits applied, the
    breakpoint t, whether the activation is convex at t, and the split signs (shape of the
    input)."""
    out = {}
    for eq, (start, stop) in zip(net.activations(), neuron_layout(net)):
        shape = eq.inputs[0].shape
        t, left, right, _ = eq.activation.kink(*(read(env, v) for v in eq.inputs[1:]))
        t = jnp.broadcast_to(jnp.asarray(t, lower.dtype), shape)
        s = splits[start:stop].reshape(shape)
        low = jnp.where(s > 0, jnp.maximum(lower[start:stop].reshape(shape), t),
                        lower[start:stop].reshape(shape))  # fmt: skip
        high = jnp.where(s < 0, jnp.minimum(upper[start:stop].reshape(shape), t),
                         upper[start:stop].reshape(shape))  # fmt: skip
        convex = jnp.broadcast_to(jnp.asarray(left) <= jnp.asarray(right), shape)
        out[eq] = (Interval(low, high), t, convex, s)
    return out


def _flat(net, per_activation, rows):
    """(K, *shape) arrays per activation -> (K, N)."""
    return jnp.concatenate([per_activation[eq].reshape(rows, -1) for eq in net.activations()], 1)


def _unflat(net, flat):
    """(K, N) -> {activation equation: (K, *shape)}."""
    return {
        eq: flat[:, start:stop].reshape(flat.shape[0], *eq.inputs[0].shape)
        for eq, (start, stop) in zip(net.activations(), neuron_layout(net))
    }


def adaptive_slopes(net: Network, example: InputSet, C: jax.Array, lower: jax.Array,
                    upper: jax.Array, splits: jax.Array) -> jax.Array:  # fmt: skip
    """CROWN's adaptive slopes (Zhang et al. 2018) of D split domains: the alpha at which
    `bound_relu_domains` starts when given none, the same for each row of C.

    Args:
      net, example, C, lower, upper, splits: as for `bound_relu_domains`.

    Returns:
      (D, K, N) slopes.

    Raises:
      ValueError, TypeError: arguments of the wrong shape or type, before any compilation.
    """
    _check_domains(net, C, lower, upper, splits)
    return _adaptive_slopes(net, example, lower, upper, splits, C.shape[0])


@partial(jax.jit, static_argnums=(5,))
@full_precision
def _adaptive_slopes(net, example, lower, upper, splits, rows):
    env = ibp_environment(net, *(b[None] for b in example.box()))

    def one(low, high, s):
        parts = _tightened(net, env, low, high, s)
        slopes = {}
        for eq, (bound, _, _, _) in parts.items():
            constants = [read(env, v) for v in eq.inputs[1:]]
            (p,) = eq.activation.params(bound.lower, bound.upper, *constants, option="adaptive")
            slopes[eq] = jnp.broadcast_to(p, (rows, *eq.inputs[0].shape))
        return _flat(net, slopes, rows)

    return jax.vmap(one)(lower, upper, splits)


class _Domain:
    """One activation-split domain while tracing: its tightened bounds (`_tightened`), whether
    they cross (the domain is empty), and its beta-CROWN bound as a function of the flat
    (alpha, beta) parameters (module docstring)."""

    def __init__(self, net, env, example, rows, low, high, s):
        self.net, self.env, self.example, self.rows, self.s = net, env, example, rows, s
        self.parts = _tightened(net, env, low, high, s)
        bounds = [b for b, _, _, _ in self.parts.values()]
        self.empty = jnp.any(jnp.stack([jnp.any(b.lower > b.upper) for b in bounds]))
        self.ranges = {}
        for eq, (bound, _, _, _) in self.parts.items():
            constants = [read(env, v) for v in eq.inputs[1:]]
            (self.ranges[eq],) = eq.activation.param_range(bound.lower, bound.upper, *constants)

    def bound(self, params, record=None):
        """Rounding-safe lower bounds (K,) of the rows over the domain, for any slopes in range
        and multipliers >= 0 (`project`)."""
        return _minimum(self.example, *self.linear(params, record))

    def linear(self, params, record=None):
        """The bound before its minimum over the input set: `_linear_bound`'s (a, constant,
        scale)."""
        net, env, k = self.net, self.env, self.rows.shape[0]
        slopes, multipliers = _unflat(net, params[0]), _unflat(net, params[1])

        def relax(eq):
            return relaxation(eq, self.parts[eq][0], env, None, (slopes[eq],))

        def split(eq):
            _, t, _, sign = self.parts[eq]
            coefficients = -multipliers[eq] * sign  # beta * (-1 for z >= t, +1 for z <= t)
            constant = -jnp.sum((coefficients * t).reshape(k, -1), axis=1)
            return coefficients, constant

        return _linear_bound(net, env, net.graph.output_var, self.rows, relax, split, record)

    def project(self, params):
        """The parameters clipped to their ranges; a free neuron's multiplier is zero."""
        slopes = _unflat(self.net, params[0])
        slopes = {eq: jnp.clip(a, *self.ranges[eq]) for eq, a in slopes.items()}
        free = (self.s == 0)[None]
        k = self.rows.shape[0]
        return _flat(self.net, slopes, k), jnp.where(free, 0.0, jnp.maximum(params[1], 0.0))


def split_estimates(net: Network, example: InputSet, C: jax.Array, lower: jax.Array,
                    upper: jax.Array, splits: jax.Array, alpha: jax.Array, beta: jax.Array,
                    candidates: jax.Array, first: FirstLayer | None = None,
                    first_candidates: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """Lower bounds of the children of candidate splits, with their parent's slopes and
    multipliers and no gradient step (the new split's multiplier zero): what filtered smart
    branching compares (De Palma et al., 2021).

    A candidate of `candidates` costs a backward pass per child. A candidate of the first
    activation (`first_candidates`, with `first`) costs a rank-one update of the parent's
    pass: splitting it changes only its own lines, by d_slope z + d_intercept per row, and
    z = jacobian @ x + offset, so the row's input coefficients gain lambda d_slope times the
    neuron's jacobian row (lambda: the row's coefficient on the neuron's output).

    Args:
      net, example, C, lower, upper, splits, alpha, beta: D parents, as for
        `bound_relu_domains` (alpha and beta required).
      candidates: (D, c) int: neurons of each parent to split (free ones).
      first: `first_layer(net, example)`, with first_candidates.
      first_candidates: (D, c1) int: free neurons of the first activation to split, or None.

    Returns:
      (D, 2, c + c1, K) rounding-safe lower bounds of the rows over the child with z >= t
      (index 0) and the one with z <= t (index 1) of each candidate, `candidates` first; +inf
      for an empty child.

    Raises:
      ValueError, TypeError: arguments of the wrong shape or type, before any compilation.
    """
    _check_domains(net, C, lower, upper, splits)
    if (first is None) != (first_candidates is None):
        raise ValueError("first and first_candidates go together (`first_layer`), or neither")
    n = lower.shape[1]
    _check_candidates("candidates", candidates, lower.shape[0], n)
    if first is not None:
        _check_candidates("first_candidates", first_candidates, lower.shape[0],
                          first.jacobian.shape[0])  # fmt: skip
    arrays = (lower, upper, splits, alpha, beta, candidates, first_candidates)
    arrays, count = shard_batch(arrays)
    return unpad(_split_estimates(net, example, C, first, *arrays), count)


def _check_candidates(name, candidates, domains, neurons):
    """(D, c) integers in [0, neurons), checked on the host before any compilation."""
    values = np.asarray(candidates)
    if values.ndim != 2 or values.shape[0] != domains:
        raise ValueError(f"{name} must have shape ({domains}, c) (c neurons per domain), got "
                         f"{values.shape}")  # fmt: skip
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name} must be integers (neuron indices), got {values.dtype}")
    if values.size and not (values.min() >= 0 and values.max() < neurons):
        raise ValueError(f"{name} must be neuron indices in [0, {neurons}), got "
                         f"{values.min()}..{values.max()}")  # fmt: skip


@jax.jit
@full_precision
def _split_estimates(net, example, C, first, lower, upper, splits, alpha, beta, candidates,
                     first_candidates):  # fmt: skip
    env = ibp_environment(net, *(b[None] for b in example.box()))
    out_var = net.graph.output_var
    rows = C.astype(out_var.dtype).reshape(C.shape[0], *out_var.shape)
    k = rows.shape[0]
    signs = jnp.asarray([1, -1], splits.dtype)

    def child(low, high, s, params, neuron, sign):
        domain = _Domain(net, env, example, rows, low, high, s.at[neuron].set(sign))
        value = domain.bound(domain.project(params))
        return jnp.where(domain.empty, jnp.inf, value)

    def rank_one(low, high, s, params, neurons):
        domain = _Domain(net, env, example, rows, low, high, s)
        params = domain.project(params)
        record = {}
        a, constant, scale = domain.linear(params, record)
        scale = scale + input_scale(example, a)
        eq = net.activations()[0]
        bound, t, _, _ = domain.parts[eq]
        reach = record[eq].reshape(k, -1)
        slopes = _unflat(net, params[0])[eq]

        def lines_on(interval):  # (slope, intercept) per row, as the pass picks them
            lines = [jnp.broadcast_to(v, slopes.shape).reshape(k, -1)
                     for v in relaxation(eq, interval, env, None, (slopes,))]  # fmt: skip
            up = reach >= 0
            return jnp.where(up, lines[0], lines[2]), jnp.where(up, lines[1], lines[3])

        old = lines_on(bound)
        new = (lines_on(Interval(jnp.maximum(bound.lower, t), bound.upper)),
               lines_on(Interval(bound.lower, jnp.minimum(bound.upper, t))))  # fmt: skip

        def one(side, i):
            slope = reach[:, i] * (side[0][:, i] - old[0][:, i])
            shift = reach[:, i] * (side[1][:, i] - old[1][:, i])
            row = first.jacobian[i].reshape(a.shape[1:])
            a_new = a + slope.reshape(k, *[1] * (a.ndim - 1)) * row
            # |a_new| <= |a| + |slope| |jacobian row|: the terms of both passes cover the new
            total = scale + jnp.abs(slope) * first.magnitude[i] + jnp.abs(shift)
            value = constant + slope * first.offset[i] + shift + example.minimum(a_new)
            return lowered(value, total, rows.dtype)

        return jnp.stack([jax.vmap(partial(one, side))(neurons) for side in new])

    def parent(low, high, s, alpha0, beta0, neurons, first_neurons):
        each = jax.vmap(jax.vmap(child, (None,) * 4 + (0, None)), (None,) * 5 + (0,))
        out = each(low, high, s, (alpha0, beta0), neurons, signs)
        if first_neurons is None:
            return out
        cheap = rank_one(low, high, s, (alpha0, beta0), first_neurons)
        return jnp.concatenate([out, cheap], axis=1)

    return jax.vmap(parent)(lower, upper, splits, alpha, beta, candidates, first_candidates)


@partial(jax.jit, static_argnums=(9, 10))
@full_precision
def _relu_domains(net, example, C, thresholds, lower, upper, splits, alpha, beta, steps,
                  optimizer):  # fmt: skip
    optimizer = optax.adam(0.1) if optimizer is None else optimizer
    env = ibp_environment(net, *(b[None] for b in example.box()))
    out_var = net.graph.output_var
    rows = C.astype(out_var.dtype).reshape(C.shape[0], *out_var.shape)
    k = rows.shape[0]

    def one(low, high, s, alpha0, beta0):
        domain = _Domain(net, env, example, rows, low, high, s)
        bounds_of, project = domain.bound, domain.project
        params = project((alpha0, beta0))

        def loss(params):
            values = bounds_of(params)
            return -jnp.sum(values), values

        def ascent(carry, _):
            params, state, best = carry
            (_, values), grads = jax.value_and_grad(loss, has_aux=True)(params)
            updates, state = optimizer.update(grads, state, params)
            params = project(optax.apply_updates(params, updates))
            return (params, state, jnp.where(values > best, values, best)), None

        best = jnp.full(k, -jnp.inf, rows.dtype)
        (params, _, best), _ = jax.lax.scan(
            ascent, (params, optimizer.init(params), best), length=steps
        )
        record = {}
        final = bounds_of(params, record)
        best = jnp.where(domain.empty, jnp.inf, jnp.where(final > best, final, best))
        row = jnp.argmax(best - thresholds)
        scores = {}
        for eq, (bound, t, convex, sign) in domain.parts.items():
            lines = relaxation(eq, bound, env, None, (_unflat(net, params[0])[eq][row],))
            gap = (lines.upper_slope - lines.lower_slope) * t + (
                lines.upper_intercept - lines.lower_intercept
            )
            a = record[eq][row]
            weight = jnp.where(convex, -jnp.minimum(a, 0), jnp.maximum(a, 0))
            free = (sign == 0) & (bound.lower < t) & (bound.upper > t)
            scores[eq] = jnp.where(free, (weight + 1e-3 * jnp.abs(a)) * gap, -jnp.inf)
        a_in = record[net.graph.input_var][row]
        point = _minimiser(example, a_in)
        values = (rows.reshape(k, -1) @ net(point[None]).reshape(-1)).astype(rows.dtype)
        return best, _flat(net, scores, 1)[0], point, values, params[0], params[1]

    best, scores, point, values, alpha, beta = jax.vmap(one)(lower, upper, splits, alpha, beta)
    return DomainBounds(best, scores, point, values, alpha, beta)


def _minimiser(example, a):
    """A point of the set minimising <a, x> over its box (the centre for an l1 ball)."""
    lower, upper = example.box()
    if type(example).__name__ == "L1Ball":
        return example.center()
    return jnp.where(a >= 0, lower, upper)


def bound_input_domains(net: Network, lower: jax.Array, upper: jax.Array, C: jax.Array,
                        thresholds: jax.Array) -> DomainBounds:  # fmt: skip
    """CROWN bounds of D boxes (input splits), the output pass's slopes optimised by
    INPUT_STEPS gradient steps, with smear scores (module docstring).

    Args:
      net: a traced network (any activation of the registry).
      lower, upper: (D, *input shape), the boxes.
      C: the rows (K, num_outputs).
      thresholds: (K,), as in `bound_relu_domains`.

    Returns:
      `DomainBounds` with the rows' input coefficients and without alpha and beta; the point is
      whichever of the best row's minimising vertex and the box centre has the lower
      max_k (values_k - thresholds_k).

    Raises:
      ValueError: arguments of the wrong shape, before any compilation.
    """
    _check_rows(net, C, thresholds)
    shape = tuple(net.input_shape)
    for name, value in (("lower", lower), ("upper", upper)):
        if getattr(value, "ndim", 0) != 1 + len(shape) or tuple(value.shape[1:]) != shape:
            got = getattr(value, "shape", None)
            raise ValueError(f"{name} must have shape (D, {', '.join(map(str, shape))}) (D boxes "
                             f"of the network's input), got {got}")  # fmt: skip
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must hold the same number of boxes, got "
                         f"{lower.shape[0]} and {upper.shape[0]}")  # fmt: skip
    (lower, upper), count = shard_batch((lower, upper))
    return unpad(_input_domains(net, lower, upper, C, thresholds), count)


@jax.jit
@full_precision
def _input_domains(net, lower, upper, C, thresholds):
    out_var = net.graph.output_var
    rows = C.astype(out_var.dtype).reshape(C.shape[0], *out_var.shape)
    k = rows.shape[0]
    activations = net.activations()

    def one(low, high):
        example = Box.tree_unflatten(None, (low, high))
        env, bounds = _activation_bounds(net, example, "adaptive", "crown", None)
        ranges, start = [], []  # per activation, its parameters' ranges and CROWN's choice
        for eq in activations:
            constants = [read(env, v) for v in eq.inputs[1:]]
            b = bounds[eq]
            ranges.append(eq.activation.param_range(b.lower, b.upper, *constants))
            start.append(eq.activation.params(b.lower, b.upper, *constants, option="adaptive"))

        def row_bound(row):
            def bound_of(slopes, record=None):
                def relax(eq):
                    return relaxation(eq, bounds[eq], env, None, slopes[activations.index(eq)])

                return _backward(net, env, example, out_var, row[None], relax, record=record)[0]

            def ascent(carry, _):
                slopes, state, best, best_slopes = carry
                value, grads = jax.value_and_grad(bound_of)(slopes)
                better = value > best
                best = jnp.where(better, value, best)
                best_slopes = jax.tree.map(partial(jnp.where, better), slopes, best_slopes)
                updates, state = INPUT_OPTIMIZER.update(jax.tree.map(jnp.negative, grads), state)
                slopes = jax.tree.map(lambda a, r: jnp.clip(a, *r),
                                      optax.apply_updates(slopes, updates), ranges)  # fmt: skip
                return (slopes, state, best, best_slopes), None

            carry = (start, INPUT_OPTIMIZER.init(start), -jnp.inf, start)
            (slopes, _, best, best_slopes), _ = jax.lax.scan(ascent, carry, length=INPUT_STEPS)
            last = bound_of(slopes)
            best_slopes = jax.tree.map(partial(jnp.where, last > best), slopes, best_slopes)
            record = {}
            value = bound_of(best_slopes, record)  # the best slopes' bound and linear function
            return value, record[net.graph.input_var][0]

        best, coefficients = jax.vmap(row_bound)(rows)
        a = coefficients[jnp.argmax(best - thresholds)]
        candidates = jnp.stack([jnp.where(a >= 0, low, high), (low + high) / 2])
        values = net(candidates).reshape(2, -1) @ rows.reshape(k, -1).T
        pick = jnp.argmin(jnp.max(values - thresholds, axis=1))
        scores = (jnp.abs(a) * (high - low)).reshape(-1)
        return best, scores, candidates[pick], values[pick], coefficients

    best, scores, point, values, coefficients = _in_chunks(one, INPUT_CHUNK)(lower, upper)
    return DomainBounds(best, scores, point, values, coefficients=coefficients)
