"""Branch and bound: complete verification past the MILP's reach.

The question is whether some input of one example's set reaches the unsafe region C @ f(x) <= d
(one disjunct of a VNN-LIB property, or f_j >= f_y for one class j of a robustness question).
A domain is the set with split constraints; it is safe when some row k has a proven lower bound
of c_k . f(x) above d_k + tol_k. Branch and bound keeps a pool of open domains on the host,
bounds fixed-size batches of them in one jitted, vmapped call
(`jaxcert.bounds.bound_relu_domains`, `bound_input_domains`), and splits what is not yet safe:

* activation splits: of the best-scored few free unstable neurons the one whose children bound
  best (branching="fsb"; or the best-scored one, "babsr") gets z >= t in one child and z <= t in
  the other; children start from the parent's slopes and multipliers (beta-CROWN), and a child
  whose estimate already proves it safe is not bounded again. A domain with no unstable neuron
  left is decided by an LP (GLOP) with every split as a constraint, exact for a
  piecewise-linear network;
* input splits (low-dimensional box-shaped sets): the box is halved along the coordinate with
  the largest smear, or where no smear reaches the gap left the one of largest width weighted
  by the first activations' sensitivity to it (`_split_scores`).
  Works for every activation of the registry, sigmoid and tanh included.

Every bound pass also evaluates the network at a point of each child (the minimiser of the
bound's linear function, or the box centre); a point that reaches the region by the tolerance
goes to `confirm`, which re-runs it through the network in float32 and float64, and only a
confirmed point answers "falsified". The answer "verified" needs every domain proved safe; a
domain that can be split no further and not decided leaves the answer "unknown", and the time
limit "timeout". The parents taken next are the K with the lowest bound; when the pool holds
`max_domains`, the deepest instead (depth first), which bounds its memory. The pool (`_Pool`)
keeps its domains in buffers that grow by doubling, so that a round costs what it adds and
takes, not the pool's size.

Batches are padded to few sizes so that each function compiles once or a few times
(activation splits: `batch_size`; their estimates: `FSB_CALL` parents; input splits: 8, 64,
..., `batch_size`, or on a single CPU device calls of `CPU_INPUT_CALL` boxes,
`CONCURRENT_CALLS` at a time, each in a thread); a batch
of domains is spread over all devices by `jaxcert.bounds` (JAX sharding). The deadline covers
compilation: every call runs under `Clock.run` (or `Clock.run_each`, `Clock.start`), which
returns at the deadline.

References:
  S. Wang et al., "Beta-CROWN: Efficient Bound Propagation with Per-neuron Split Constraints for
  Neural Network Robustness Verification", NeurIPS 2021.
  R. Bunel et al., "Branch and Bound for Piecewise Linear Neural Network Verification", JMLR 2020.
  K. Xu et al., "Fast and Complete: Enabling Complete Neural Network Verification with Rapid and
  Massively Parallel Incomplete Verifiers", ICLR 2021.
  A. De Palma, R. Bunel, A. Desmaison, K. Dvijotham, P. Kohli, P. H. S. Torr and M. P. Kumar,
  "Improved Branch and Bound for Neural Network Verification via Lagrangian Decomposition",
  2021 (filtered smart branching).
"""

import datetime
import math
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ortools.math_opt.python import mathopt

from .._rounding import rounded_box
from .._sets import Box, InputSet, LinfBall
from .._sharding import single_cpu_device
from .._validate import check_choice
from ..bounds import (
    Interval,
    adaptive_slopes,
    bound_input_domains,
    bound_relu_domains,
    breakpoints,
    first_layer,
    intermediate_bounds,
    lp_model,
    neuron_layout,
    split_estimates,
)
from ..graph import Network
from ._clock import Clock, OutOfTime

SPLITS = ("relu", "input")
INPUT_SPLIT_DIMENSIONS = 16  # "auto" splits the inputs of box-shaped sets up to this size
MEMORY = 1 << 30  # bytes of split states the pool may hold before it goes depth first
# Input splits on one CPU device: boxes per call, and the only size compiled. Bounding boxes
# 64 at a time is the fastest per box there (`jaxcert.bounds.bound_input_domains` chunks
# larger batches so), and one size compiles once: about 4 s for a 5-50x6-5 network on 2 cores,
# against 14 s for the sizes 8, 64 and 512.
CPU_INPUT_CALL = 64
# Input splits on one CPU device: calls of a batch computed at once, each in its own thread.
# A call of 64 small boxes leaves cores idle, and two at a time fill them (ACAS-like network of
# benchmarks/bab.py: 10-30% faster); calls of 512 activation-split domains already keep both
# cores busy (FSB's estimates, two at a time: 5% slower).
CONCURRENT_CALLS = 2
BRANCHING = ("babsr", "fsb")  # how activation splits choose their neuron (`_smart_choice`)
# Filtered smart branching ("fsb"): the neurons per parent whose children are bounded before
# choosing, of the later activations (a backward pass per child) and of the first activation
# (a rank-one update per child, `split_estimates`); parents per call of the estimates. On the
# MNIST-sized MLP of benchmarks/bab.py (img1, eps 0.008, 2 steps, 2-core AMD EPYC) its hardest
# class was verified in 48-52 s with 8 and 16 (244,437 domains), 58 s with 8 and 8, 57 s with
# 8 and 32, 65 s with 4 and 16 (393,925) and 65 s with 16 and 16 (201,027); 32 parents per
# call: 51 s, 64: 41-50 s, 128: 44 s, 256: 66 s.
FSB_CANDIDATES = 8
FSB_FIRST_CANDIDATES = 16
FSB_CALL = 64
# Gradient steps on alpha and beta per activation-split domain. On the same question ("fsb",
# 16 candidates, no rank-one estimates): 65-67 s with 2 steps (229,603 domains), 71 s with 1
# and 3, 82 s with 5 (210,695); without steps it was open at 233 s.
RELU_STEPS = 2


class BranchResult(NamedTuple):
    """The answer for one disjunct.

    Attributes:
      status: "verified" (every domain proved safe), "falsified" (a confirmed counterexample),
        "timeout" (domains left at the time limit) or "unknown" (a domain that could not be
        split further nor decided).
      lower: a proven lower bound of max_k (c_k . f(x) - d_k - tol_k) over the whole set
        (-inf before the first bound).
      counterexample: what `confirm` returned for the point, or None.
      domains: domains bounded.
      seconds: wall time.
    """

    status: str
    lower: float
    counterexample: object
    domains: int
    seconds: float


def choose_split(net: Network, spec: InputSet) -> str:
    """How to split: "input" for a box-shaped set (a `Box` or an `LinfBall`) of at most
    `INPUT_SPLIT_DIMENSIONS` inputs, or of any size when the network has a smooth activation
    (sigmoid, tanh: no activation splits); else "relu"."""
    dims = math.prod(spec.shape)
    smooth = any(eq.activation.kink is None for eq in net.activations())
    box_like = isinstance(spec, Box | LinfBall)
    if box_like and (dims <= INPUT_SPLIT_DIMENSIONS or smooth):
        return "input"
    return "relu"


def check_split(net: Network, spec: InputSet, split: str) -> str:
    """The split to use: `split` checked ("auto", "relu" or "input"), "auto" resolved by
    `choose_split`; ValueError for input splits of a set that is not a box, or activation
    splits of a network with a smooth activation."""
    check_choice("split", split, ("auto", *SPLITS))
    if split == "auto":
        return choose_split(net, spec)
    if split == "input" and not isinstance(spec, Box | LinfBall):
        raise ValueError(f"input splits need an LinfBall or a Box, got {type(spec).__name__}")
    return split


def branch_and_bound(net: Network, example: InputSet, C, d, tol, *, clock: Clock,
                     confirm: Callable, split: str = "relu", relu_bounds=None,
                     batch_size: int = 512, steps: int = RELU_STEPS, leaf_tolerance=None,
                     branching: str = "fsb", progress: bool = False) -> BranchResult:  # fmt: skip
    """Decide whether some input of `example` reaches C @ f(x) <= d (module docstring).

    Args:
      net: a traced network (activation splits: piecewise-linear activations only).
      example: one example's input set (no batch axis); input splits need a `Box` or an
        `LinfBall`.
      C: the region's rows (K, num_outputs); d, tol: (K,) thresholds and tolerances.
      clock: the deadline (`Clock`), covering everything including compilation.
      confirm: maps a candidate point (input shape, NumPy) to a counterexample or None.
      split: "relu" or "input".
      relu_bounds: bounds of every activation's input over the set (Intervals without a batch
        axis), for activation splits; None computes CROWN's.
      batch_size: children bounded per call (a power of two >= 8).
      steps: alpha/beta gradient steps per bound (activation splits).
      leaf_tolerance: (K,) how far an LP optimum of a fully split domain must clear d (the
        LP is solved in float64 on float32 bounds); default tol.
      branching: how activation splits choose their neuron: "fsb" (default; filtered smart
        branching: the best of the top candidates' children, bounded first) or "babsr" (the
        largest score).
      progress: print domains per second, open domains and the worst bound to standard error.

    Returns:
      A `BranchResult`.
    """
    C = np.asarray(C, np.float32)
    d, tol = np.asarray(d, np.float64), np.asarray(tol, np.float64)
    check_choice("branching", branching, BRANCHING)
    search = _Search(net, example, C, d, tol, clock, confirm, batch_size, branching, progress)
    try:
        if split == "input":
            search.input_splits()
        else:
            search.relu_splits(relu_bounds, steps,
                               tol if leaf_tolerance is None else leaf_tolerance)  # fmt: skip
        if search.undecidable:
            search.status = "unknown"
    except OutOfTime:
        search.status = "timeout"
    except _Found as found:
        search.status, search.counterexample = "falsified", found.counterexample
    except _Undecidable:
        search.status = "unknown"
    search.report(final=True)
    return BranchResult(search.status, search.lower(), search.counterexample, search.domains,
                        clock.seconds())  # fmt: skip


class _Undecidable(Exception):
    """A point reaches the region within the tolerance, and is no counterexample."""


class _Found(Exception):
    def __init__(self, counterexample):
        self.counterexample = counterexample


def _buckets(batch_size):
    sizes, size = [], 8
    while size < batch_size:
        sizes.append(size)
        size *= 8
    return [*sizes, batch_size]


def _clip_boxes(lower, upper, bound, coefficients, thresholds):
    """Boxes cut down to the part that can still reach the region (input domain clipping).

    Over the box [l, u], row k's bound is linear: c_k . f(x) >= b_k + sum_j |a_kj| e_j(x), with
    e_j(x) = x_j - l_j where a_kj >= 0 and u_j - x_j where a_kj < 0 (`DomainBounds`). A point
    with c_k . f(x) <= t_k for every k (t = thresholds) therefore has |a_kj| e_j(x) <= t_k - b_k
    for every k and j, which bounds x_j on one side. The cut is made with the slack
    s_k = t_k - b_k + m_k, m_k = (t_k - b_k) / 16 + 1e-6 (1 + |t_k|), in float64 and rounded
    outwards to float32, so every point cut off has c_k . f(x) - t_k > m_k for some k.

    Args:
      lower, upper: (D, *shape) the boxes (float32).
      bound: (D, K) each box's own lower bounds b (not inherited from a parent).
      coefficients: (D, K, *shape) the rows' input coefficients a.
      thresholds: (K,) t.

    Returns:
      (lower, upper, margin, empty): the cut boxes (float32, inside the given ones); margin
      (D,), a proven lower bound of max_k (c_k . f(x) - t_k) over what was cut off (inf where
      nothing was); empty (D,), where nothing is left (the whole box is safe, by margin).
    """
    shape = lower.shape
    lo, hi = (np.asarray(v, np.float64).reshape(len(v), 1, -1) for v in (lower, upper))
    a = np.asarray(coefficients, np.float64).reshape(lo.shape[0], -1, lo.shape[2])
    gap = thresholds - np.asarray(bound, np.float64)  # (D, K); < 0 somewhere: already safe
    extra = gap / 16 + 1e-6 * (1 + np.abs(thresholds))
    usable = np.all(gap >= 0, axis=1)  # a safe box is dropped as it is
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(usable[:, None], gap + extra, np.inf)[..., None] / np.abs(a)
    reach = np.where(np.isnan(reach), np.inf, reach)
    new_lo = np.max(np.where(a < 0, hi - reach, lo), axis=1)
    new_hi = np.min(np.where(a > 0, lo + reach, hi), axis=1)
    empty = np.any(new_lo > new_hi, axis=1)
    new_lo, new_hi = rounded_box(new_lo, new_hi, np.float32, outward=True)
    lo32, hi32 = (np.asarray(v, np.float32).reshape(len(v), -1) for v in (lower, upper))
    new_lo, new_hi = np.maximum(new_lo, lo32), np.minimum(new_hi, hi32)
    new_lo, new_hi = np.where(empty[:, None], lo32, new_lo), np.where(empty[:, None], hi32, new_hi)
    cut = empty | np.any((new_lo > lo32) | (new_hi < hi32), axis=1)
    margin = np.where(cut & usable, np.min(extra, axis=1), np.inf)
    return new_lo.reshape(shape), new_hi.reshape(shape), margin, empty & usable


def _split_scores(coefficients, width, weights, gap):
    """Which coordinate of each box to halve: the one of largest smear |a_j| (u_j - l_j)
    (Bunel et al., 2020) where that smear reaches the gap between the bound and its threshold,
    else the one of largest weighted width w_j (u_j - l_j).

    Halving coordinate j raises the same linear bound by at most about half its smear, in one
    child. Where no smear reaches the gap, the relaxations have to tighten, which needs the box
    smaller in what its unstable neurons depend on, and a coordinate of large smear may be one
    already clipped to a sliver (`_clip_boxes`). On the ACAS-like network of benchmarks/bab.py
    the smear alone left 4 of 10 properties undecided at 60 s (one "unknown" after 258 s on
    slivers as thin as float32 allows); with this rule every one is decided.

    Args:
      coefficients: (D, n) the best row's input coefficients a.
      width: (D, n) the boxes' widths u - l.
      weights: (n,) w >= 0, `_input_weights`.
      gap: (D,) how far the best row's bound is below its threshold (> 0 for an open box).

    Returns:
      (D, n) scores, the highest to be split.
    """
    smear = np.abs(coefficients) * width
    return np.where((np.max(smear, axis=1) < gap)[:, None], width * weights, smear)


def _input_weights(net, lower, upper, clock):
    """(n,) how much each input coordinate moves the first activations' inputs per unit of its
    width over the box (IBP over n boxes, each the centre but along one coordinate: for a dense
    first layer, the l1 norms of the weight matrix's columns); where nothing does (no
    activation), one over the coordinate's width in the box."""
    lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in (lower, upper))
    n, span = lo.size, hi - lo
    if not net.activations():
        with np.errstate(divide="ignore"):
            return np.where(span > 0, 1 / span, 0.0)
    centre = (lo + hi) / 2
    along_lo, along_hi = np.tile(centre, (n, 1)), np.tile(centre, (n, 1))
    along_lo[np.arange(n), np.arange(n)], along_hi[np.arange(n), np.arange(n)] = lo, hi
    shape = (n, *np.shape(lower)[1:])
    box_lo, box_hi = rounded_box(along_lo, along_hi, np.float32, outward=True)
    box = Box(jnp.asarray(box_lo.reshape(shape)), jnp.asarray(box_hi.reshape(shape)))
    first = clock.run(intermediate_bounds, net, box, method="ibp")[0]
    moved = np.asarray(first.upper - first.lower, np.float64).reshape(n, -1).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, moved / span, 0.0)


def _halving(lower, upper, scores):
    """Where to halve each box (D, n): the coordinate of highest score among those float32 can
    still split, its midpoint, and whether the box has such a coordinate at all."""
    mid = ((lower.astype(np.float64) + upper) / 2).astype(np.float32)
    scores = np.where((mid > lower) & (mid < upper), scores, -np.inf)
    dim = np.argmax(scores, axis=1)
    rows = np.arange(len(lower))
    return dim, mid[rows, dim], np.isfinite(scores[rows, dim])


def _padded(arrays, size):
    """Each array's leading axis padded to `size` with copies of its first entry."""
    return [np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)]) for a in arrays]


def _best(scores, count):
    """(P, count) indices of each row's highest scores, best first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


class _Pool:
    """The open domains: per-domain arrays (a dict of them, "values" among them) in buffers
    that double when full; taking domains out moves the last ones into their places. Adding
    and taking cost what is added or taken, not the pool's size."""

    def __init__(self):
        self.buffers, self.size = None, 0

    def __getitem__(self, key):
        return self.buffers[key][: self.size]

    def add(self, new):
        count = len(new["values"])
        if self.buffers is None:
            self.buffers = {k: np.empty((max(count, 64), *v.shape[1:]), v.dtype)
                            for k, v in new.items()}  # fmt: skip
        capacity = len(self.buffers["values"])
        if self.size + count > capacity:
            capacity = max(2 * capacity, self.size + count)
            for k, v in self.buffers.items():
                grown = np.empty((capacity, *v.shape[1:]), v.dtype)
                grown[: self.size] = v[: self.size]
                self.buffers[k] = grown
        for k, v in self.buffers.items():
            v[self.size : self.size + count] = new[k]
        self.size += count

    def take(self, indices):
        """The domains at `indices` (distinct, below the size), removed from the pool."""
        taken = {k: v[indices] for k, v in self.buffers.items()}
        end = self.size - len(indices)
        holes = indices[indices < end]
        tail = np.ones(len(indices), bool)
        tail[indices[indices >= end] - end] = False
        movers = end + np.flatnonzero(tail)
        for v in self.buffers.values():
            v[holes] = v[movers]
        self.size = end
        return taken


class _Search:
    """The pool and the loop of one branch and bound."""

    def __init__(self, net, example, C, d, tol, clock, confirm, batch_size, branching,
                 progress):  # fmt: skip
        self.net, self.example, self.C, self.branching = net, example, C, branching
        self.d, self.tol, self.clock, self.confirm = d, tol, clock, confirm
        self.thresholds = (d + tol).astype(np.float32)
        self.buckets = _buckets(batch_size)
        self.batch_size = self.call_size = batch_size
        self.concurrent_calls = 1
        self.status, self.counterexample = "verified", None
        self.undecidable, self.max_domains = False, batch_size
        self.domains, self.pool, self.safe_min = 0, _Pool(), np.inf
        self.first_size = 0  # first-activation neurons split-estimated by rank-one updates
        self.progress = progress
        self.called = set()  # (bound function, batch size) already called once
        self.warming = {}  # bound function -> waits for its first call, begun in the background
        self.tty = progress and sys.stderr.isatty()
        self.next_report = 0.0

    # ------------------------------------------------------------------ shared by both splits

    @property
    def open_values(self):
        """max_k (lower_k - d_k - tol_k) of each open domain."""
        return self.pool["values"] if self.pool.buffers is not None else np.zeros(0)

    def lower(self):
        if self.domains == 0 or self.status == "falsified":
            return -math.inf
        open_min = float(self.open_values.min()) if self.open_values.size else math.inf
        return min(open_min, self.safe_min)

    def _bound(self, fn, count, arrays, *, counted=True, call_size=None):
        """fn on the arrays padded to a bucket, in calls of at most `call_size` (default
        self.call_size); NumPy out. The domains are added to the count bounded unless
        `counted` is False."""
        if fn in self.warming:  # compiled in the background: wait for it
            self.warming.pop(fn)()
        calls, sizes, call_size = [], [], call_size or self.call_size
        for start in range(0, count, call_size):
            part = [a[start : start + call_size] for a in arrays]
            sizes.append(len(part[0]))
            bucket = min(call_size, next(b for b in self.buckets if b >= sizes[-1]))
            calls.append(_padded(part, bucket))
        results, first = [], (fn, len(calls[0][0]))
        if first not in self.called:  # its first call alone: one compilation, not two
            results.append(self.clock.run(fn, *calls.pop(0)))
            self.called.add(first)
        results += self.clock.run_each(fn, calls, self.concurrent_calls)
        self.domains += sum(sizes) if counted else 0
        outs = [jax.tree.map(lambda a, n=n: None if a is None else np.asarray(a)[:n], result)
                for result, n in zip(results, sizes)]  # fmt: skip
        return jax.tree.map(lambda *a: np.concatenate(a), *outs)

    def _values(self, bounds):
        """max_k (lower_k - d_k - tol_k) per domain."""
        return self._values_of(bounds.lower)

    def _values_of(self, lower):
        """max_k (lower_k - d_k - tol_k) along the last axis of the lower bounds."""
        return np.max(lower.astype(np.float64) - self.d - self.tol, axis=-1)

    def _check_points(self, bounds):
        """Confirm the candidate points that reach the region by the tolerance. A point that
        reaches it within the tolerance but is no counterexample ends the search as "unknown":
        no bound of its domain can clear the tolerance."""
        near = np.all(bounds.values.astype(np.float64) <= self.d + self.tol, axis=1)
        for i in np.flatnonzero(near):
            found = self.confirm(np.asarray(bounds.point[i]))
            if found is not None:
                raise _Found(found)
        if near.any():
            raise _Undecidable

    def report(self, final=False):
        if not self.progress:
            return
        now = self.clock.seconds()
        if not final and (not self.tty or now < self.next_report):
            return
        self.next_report = now + 0.5
        rate = self.domains / now if now > 0 else 0.0
        worst = self.lower()
        text = (f"branch and bound: {self.domains} domains ({rate:.0f}/s), "
                f"{self.open_values.size} open, worst bound {worst:.4g}, {now:.1f} s")  # fmt: skip
        if final:
            text += f": {self.status}"
        sys.stderr.write(("\r\033[K" + text if self.tty else text) + ("\n" if final else ""))
        sys.stderr.flush()

    def _select(self, count, depth=None):
        """Indices of the parents to split: the lowest values, or the deepest when full."""
        n = min(count, self.open_values.size)
        if depth is not None:
            order = np.lexsort((self.open_values, -depth))
            return order[:n]
        if n == self.open_values.size:
            return np.argsort(self.open_values)
        return np.argpartition(self.open_values, n - 1)[:n]

    def run(self, children, bound, state, branch, leaf=None, shrink=None):
        """The loop: bound the children, confirm their points, drop the safe ones, keep the
        rest in the pool (their `state`), and split the parents `branch` makes children of.

        bound(children) -> DomainBounds; state(children, bounds) -> dict of per-domain arrays;
        leaf(children, i) decides a domain whose scores are all -inf (NaN: undecided);
        branch(parents) -> (children, known), children a tuple of arrays with a leading domain
        axis and known (children, K) their lower bounds proven so far (the parent's at least:
        the parent's set holds the child's), children already proven safe left out;
        shrink(children, bounds) -> (children, bounds, margin, empty) cuts proven-safe parts
        off the children (`_clip_boxes`). A child keeps its known bound where that is higher.
        """
        pool, inherited = self.pool, None
        while True:
            if len(children[0]):
                self._bound_children(children, inherited, bound, state, leaf, shrink)
            self.report()
            if not pool.size:
                return
            self.clock.check()
            full = pool.size >= self.max_domains
            depth = pool["depth"] if full else None
            parents = pool.take(self._select(self.batch_size // 2, depth))
            children, inherited = branch(parents)

    def _bound_children(self, children, inherited, bound, state, leaf, shrink):
        """One round of `run` for a batch of children: bound them, confirm their points, and
        put the open ones in the pool."""
        bounds = self._bound(bound, len(children[0]), children)
        self._check_points(bounds)
        empty = np.zeros(len(children[0]), bool)
        if shrink is not None:  # with each child's own bound, before inheriting
            children, bounds, margin, empty = shrink(children, bounds)
            self.safe_min = min(self.safe_min, float(margin.min(initial=math.inf)))
        if inherited is not None:
            bounds = bounds._replace(lower=np.maximum(bounds.lower, inherited))
        values = self._values(bounds)
        keep = ~(values > 0) & ~empty
        if leaf is not None:
            leaves = keep & ~np.isfinite(bounds.scores).any(axis=1)
            for i in np.flatnonzero(leaves):
                self.clock.check()
                values[i] = leaf(children, i)  # a positive value, or None: undecided
                if np.isnan(values[i]):
                    self.undecidable = True
            keep &= ~leaves
        self.safe_min = min(self.safe_min, *values[~keep & (values > 0)], math.inf)
        new = {**state(children, bounds), "lower": bounds.lower, "values": values}
        self.pool.add({key: value[keep] for key, value in new.items()})

    def input_splits(self):
        """Halve boxes along their coordinate of largest smear."""
        lower, upper = (np.asarray(b, np.float32)[None] for b in self.example.box())
        shape = lower.shape[1:]
        C, thresholds = jnp.asarray(self.C), jnp.asarray(self.thresholds)
        weights = _input_weights(self.net, lower, upper, self.clock)
        self.max_domains = max(self.batch_size, MEMORY // (8 * lower.size + 16))
        if single_cpu_device():
            self.call_size = CPU_INPUT_CALL
            self.buckets = [CPU_INPUT_CALL]
            self.concurrent_calls = CONCURRENT_CALLS

        def bound(lo, hi, _):
            return bound_input_domains(self.net, jnp.asarray(lo), jnp.asarray(hi), C, thresholds)

        def state(children, bounds):
            lo, hi, depth = children
            return {"box_lower": lo, "box_upper": hi, "depth": depth, "scores": bounds.scores}

        def shrink(children, bounds):
            lo, hi, depth = children
            lo, hi, margin, empty = _clip_boxes(lo, hi, bounds.lower, bounds.coefficients,
                                                self.d + self.tol)  # fmt: skip
            rows = np.arange(len(lo))
            value = bounds.lower.astype(np.float64) - self.d - self.tol
            best = np.argmax(value, axis=1)
            a = bounds.coefficients[rows, best].reshape(len(lo), -1)
            scores = _split_scores(a, (hi - lo).reshape(len(lo), -1), weights,
                                   -value[rows, best])  # fmt: skip
            return (lo, hi, depth), bounds._replace(scores=scores), margin, empty

        def branch(parents):
            lo = parents["box_lower"].reshape(len(parents["box_lower"]), -1)
            hi = parents["box_upper"].reshape(lo.shape)
            rows = np.arange(len(lo))
            dim, mid, splittable = _halving(lo, hi, parents["scores"])
            if not splittable.all():  # boxes as narrow as float32 allows, still open
                self.undecidable = True
                rows, dim, mid = rows[splittable], dim[splittable], mid[splittable]
            left_hi, right_lo = hi[rows].copy(), lo[rows].copy()
            left_hi[np.arange(rows.size), dim] = mid
            right_lo[np.arange(rows.size), dim] = mid
            depth = np.concatenate([parents["depth"][rows] + 1] * 2)
            children = (
                np.concatenate([lo[rows], right_lo]).reshape(-1, *shape),
                np.concatenate([left_hi, hi[rows]]).reshape(-1, *shape),
                depth,
            )
            return children, parents["lower"][np.concatenate([rows, rows])]

        self.run((lower, upper, np.zeros(1, np.int32)), bound, state, branch, shrink=shrink)

    def relu_splits(self, relu_bounds, steps, leaf_tolerance):
        """Split unstable neurons (beta-CROWN bounds, LPs for fully split domains)."""
        net = self.net
        if relu_bounds is None:
            batched = jax.tree.map(lambda a: a[None], self.example)
            relu_bounds = [Interval(b.lower[0], b.upper[0])
                           for b in intermediate_bounds(net, batched)]  # fmt: skip
        root_lo = np.concatenate([np.asarray(b.lower, np.float32).ravel() for b in relu_bounds])
        root_hi = np.concatenate([np.asarray(b.upper, np.float32).ravel() for b in relu_bounds])
        n, k = root_lo.size, self.C.shape[0]
        root_lo, root_hi = jnp.asarray(root_lo), jnp.asarray(root_hi)  # on the device once
        C, thresholds = jnp.asarray(self.C), jnp.asarray(self.thresholds)
        example = self.example
        self.max_domains = max(self.batch_size, MEMORY // (n + 8 * k * n + 16))
        # One size compiled: small batches padded to batch_size cost milliseconds, each
        # further compilation seconds (MNIST-sized MLP of benchmarks/bab.py, img1, eps 0.008,
        # "fsb": 41.4 s for its hardest class against 48.1 s with sizes 8, 64 and 512).
        self.buckets = [self.batch_size]
        first = self.clock.run(first_layer, net, example) if self.branching == "fsb" else None
        self.first_size = neuron_layout(net)[0][1] if first is not None else 0

        def root(m):
            return jnp.broadcast_to(root_lo, (m, n)), jnp.broadcast_to(root_hi, (m, n))

        def bound(splits, alpha, beta):
            arrays = map(jnp.asarray, (splits, alpha, beta))
            return bound_relu_domains(net, example, C, thresholds, *root(len(splits)), *arrays,
                                      steps=steps)  # fmt: skip

        def estimate(splits, alpha, beta, *candidates):  # candidates stay NumPy: checked there
            arrays = (*root(len(splits)), *map(jnp.asarray, (splits, alpha, beta)))
            if len(candidates) == 1:
                return split_estimates(net, example, C, *arrays, *candidates)
            return split_estimates(net, example, C, *arrays, candidates[0], first, candidates[1])

        def state(children, bounds):
            splits = children[0]
            return {"splits": splits, "alpha": bounds.alpha, "beta": bounds.beta,
                    "scores": bounds.scores, "depth": np.count_nonzero(splits, axis=1)}  # fmt: skip

        def branch(parents):
            neuron, estimates = self._smart_choice(parents, estimate)
            rows = np.arange(len(neuron))
            up, down = parents["splits"].copy(), parents["splits"].copy()
            up[rows, neuron], down[rows, neuron] = 1, -1
            children = (np.concatenate([up, down]), np.concatenate([parents["alpha"]] * 2),
                        np.concatenate([parents["beta"]] * 2))  # fmt: skip
            known = np.concatenate([parents["lower"]] * 2)
            if estimates is not None:  # filtered smart branching bounded these children already
                known = np.maximum(known, np.concatenate([estimates[:, 0], estimates[:, 1]]))
            values = self._values_of(known)
            safe = values > 0
            self.domains += int(safe.sum())
            self.safe_min = min(self.safe_min, float(values[safe].min(initial=math.inf)))
            return tuple(a[~safe] for a in children), known[~safe]

        kinks = breakpoints(net)

        def leaf(children, i):
            value = self._leaf(relu_bounds, kinks, children[0][i], leaf_tolerance)
            return np.nan if value is None else value

        splits = np.zeros((1, n), np.int8)
        alpha = np.asarray(self.clock.run(adaptive_slopes, net, example, C, *root(1),
                                          jnp.asarray(splits)))  # fmt: skip
        beta = np.zeros_like(alpha)
        if self.branching == "fsb" and n >= 2:  # compile the estimates while the root is bounded
            self._warm(estimate, (splits, alpha, beta),
                       self._candidates(np.zeros((FSB_CALL, n), np.float32)))  # fmt: skip
        self.run((splits, alpha, beta), bound, state, branch, leaf)

    def _warm(self, fn, arrays, extra):
        """Begin fn's first call (on the arrays' first entry, FSB_CALL times, and `extra`) in
        the background: its compilation runs beside the main thread's (`Clock.start`)."""
        args = [np.repeat(a[:1], FSB_CALL, axis=0) for a in arrays] + list(extra)
        self.warming[fn] = self.clock.start(fn, *args)
        self.called.add((fn, FSB_CALL))

    def _candidates(self, scores):
        """The neurons whose children `_smart_choice` estimates: (P, c) of the later
        activations' best-scored, then, where the first activation's estimates are rank-one
        updates, (P, c1) of its best-scored."""
        n1 = self.first_size
        count = min(FSB_CANDIDATES, scores.shape[1] - n1)
        top = (n1 + _best(scores[:, n1:], count)).astype(np.int32)
        if not n1:
            return (top,)
        return top, _best(scores[:, :n1], min(FSB_FIRST_CANDIDATES, n1)).astype(np.int32)

    def _smart_choice(self, parents, estimate):
        """The neuron each parent splits, and the lower bounds (P, 2, K) of its two children
        where they were computed (else None): the best-scored free neuron (BaBSR), or with
        branching="fsb" (filtered smart branching, De Palma et al., 2021) the candidate
        (`_candidates`) whose better child has the higher bound. The children of every
        candidate are bounded in one pass with the parent's slopes and multipliers and no
        gradient step (the new split's multiplier is zero; `split_estimates`). Taking the
        better child, not the worse, needed the fewest domains on the MNIST-sized MLP of
        benchmarks/bab.py (img0, eps 0.006, 4 candidates: 12,062 against 27,880; the mean of
        the two 13,764; BaBSR alone 20,084)."""
        scores = parents["scores"]
        count = min(FSB_CANDIDATES, scores.shape[1])
        if self.branching == "babsr" or count < 2:
            return np.argmax(scores, axis=1), None
        arrays = tuple(parents[key] for key in ("splits", "alpha", "beta"))
        candidates = self._candidates(scores)
        arrays += candidates
        top = np.concatenate(candidates, axis=1)  # (P, c + c1)
        valid = np.isfinite(np.take_along_axis(scores, top, axis=1))
        lower = self._bound(estimate, len(top), arrays, counted=False, call_size=FSB_CALL)
        values = self._values_of(lower)  # (P, 2, c)
        better = np.where(valid, np.max(values, axis=1), -np.inf)
        pick = np.argmax(better, axis=1)
        rows = np.arange(len(top))
        return top[rows, pick], lower[rows, :, pick]

    def _leaf(self, relu_bounds, kinks, splits, leaf_tolerance):
        """A domain with every unstable neuron split: the LP over the set with the splits as
        constraints is exact. Returns its proven value max_k (c_k . f - d_k - tol_k) when
        positive (safe); raises _Found for a confirmed counterexample; None if undecided."""
        net = self.net
        layout = neuron_layout(net)
        bounds = []
        for bound, (start, stop) in zip(relu_bounds, layout):
            s = splits[start:stop].reshape(np.shape(bound.lower))
            lo, hi = np.asarray(bound.lower, np.float64), np.asarray(bound.upper, np.float64)
            bounds.append((lo, hi, s))
        tightened = []
        for (lo, hi, s), t in zip(bounds, kinks):
            t = np.asarray(t, np.float64).reshape(lo.shape)
            tightened.append(Interval(np.where(s > 0, np.maximum(lo, t), lo),
                                      np.where(s < 0, np.minimum(hi, t), hi)))  # fmt: skip
        model, lp_vars = self.clock.build(lp_model, net, self.example, tightened)
        for eq, (_, _, s), t in zip(net.activations(), bounds, kinks):
            z = lp_vars[eq.inputs[0]]
            t = np.asarray(t, np.float64).ravel()
            for i in np.flatnonzero(s.ravel() > 0):
                model.add_linear_constraint(z[i] >= t[i])
            for i in np.flatnonzero(s.ravel() < 0):
                model.add_linear_constraint(z[i] <= t[i])
        outputs, inputs = lp_vars[net.graph.output_var], lp_vars[net.graph.input_var]
        for row, d, tol in zip(self.C, self.d, leaf_tolerance):
            model.minimize(mathopt.fast_sum(float(c) * y for c, y in zip(row, outputs) if c))
            result = mathopt.solve(model, mathopt.SolverType.GLOP,
                                   params=mathopt.SolveParameters(time_limit=datetime.timedelta(
                                       seconds=max(self.clock.left(), 1e-3))))  # fmt: skip
            reason = result.termination.reason
            if reason == mathopt.TerminationReason.INFEASIBLE:
                return math.inf  # the splits leave no input: safe
            if reason != mathopt.TerminationReason.OPTIMAL:
                self.clock.check()
                return None
            value = result.objective_value() - d - tol
            if value > 0:
                return value
            x = np.array([result.variable_values(v) for v in inputs], np.float64)
            found = self.confirm(x.reshape(np.shape(self.example.box()[0])))
            if found is not None:
                raise _Found(found)
        return None

