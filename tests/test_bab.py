"""Branch and bound: its domain bounds against sampled points, its answers against brute-force
enumeration of activation patterns, and its time limit."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_exact import exact_min_margin, mlp_apply, random_mlp

import jaxcert as jc
from jaxcert.bounds._branching import INPUT_CHUNK
from jaxcert.exact._bab import _clip_boxes, _halving, _input_weights, _Pool, _split_scores
from jaxcert.exact._clock import Clock, OutOfTime


def _pre_activations(params, x):
    """float64 forward pass of `mlp_apply`: the outputs and every ReLU's input, flat."""
    h, pre = np.asarray(x, np.float64), []
    for i, (w, b) in enumerate(params):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if i < len(params) - 1:
            pre.append(h)
            h = np.maximum(h, 0)
    return h, np.concatenate(pre, axis=1)


@pytest.mark.parametrize("kind", ["linf", pytest.param("l1", marks=pytest.mark.slow)])
def test_split_domain_bounds_hold_at_every_sampled_point_of_the_domain(kind):
    params = random_mlp(3, (4, 10, 10, 3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.3, 0.7, (1, 4)), jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    spec = jc.LinfBall(x, 0.2) if kind == "linf" else jc.L1Ball(x, 0.5)
    example = jax.tree.map(lambda a: a[0], spec)
    hidden = jc.bounds.intermediate_bounds(net, spec)
    lower = np.concatenate([np.asarray(b.lower).reshape(1, -1) for b in hidden], 1)
    upper = np.concatenate([np.asarray(b.upper).reshape(1, -1) for b in hidden], 1)
    unstable = np.flatnonzero((lower[0] < 0) & (upper[0] > 0))
    assert unstable.size >= 6
    # 16 domains: 1 to 4 unstable neurons split as at a random point of the set (so that the
    # domain is not empty), random starting slopes/multipliers.
    splits = np.zeros((16, lower.shape[1]), np.int8)
    anchors = _pre_activations(params, _sample(spec, rng, 16))[1]
    for d in range(16):
        chosen = rng.choice(unstable, size=1 + d % 4, replace=False)
        splits[d, chosen] = np.where(anchors[d, chosen] >= 0, 1, -1)
    C = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    alpha = rng.uniform(0, 1, (16, 2, lower.shape[1])).astype(np.float32)
    beta = rng.uniform(0, 2, (16, 2, lower.shape[1])).astype(np.float32)
    tile = (16, 1)
    for start in ((None, None), (alpha, beta)):
        bounds = jc.bounds.bound_relu_domains(
            net, example, C, jnp.zeros(2), np.tile(lower, tile), np.tile(upper, tile),
            splits, *start, steps=5,
        )  # fmt: skip
        points = _sample(spec, rng, 40000)
        out, pre = _pre_activations(params, points)
        values = out @ np.asarray(C, np.float64).T
        for d in range(16):
            s = splits[d]
            inside = np.all((pre[:, s > 0] >= 0), axis=1) & np.all((pre[:, s < 0] <= 0), axis=1)
            assert inside.sum() > 20
            assert np.all(values[inside] >= np.asarray(bounds.lower[d], np.float64) - 1e-5), d
        assert np.all(np.asarray(bounds.beta)[splits[:, None, :].repeat(2, 1) == 0] == 0)
        # Each row keeps the best bound seen: never below the one at the starting values.
        at_start = jc.bounds.bound_relu_domains(
            net, example, C, jnp.zeros(2), np.tile(lower, tile), np.tile(upper, tile),
            splits, *start, steps=0,
        )  # fmt: skip
        assert np.all(np.asarray(bounds.lower) >= np.asarray(at_start.lower))


def test_split_estimates_hold_in_each_child_and_rank_one_ones_match_the_backward_pass():
    # Every free unstable neuron of 8 parents (1 to 3 splits each, at a sampled point) is a
    # candidate: its two children's estimates must hold at every sampled point of the child,
    # and for a first-layer neuron the rank-one update must give the backward pass's bound,
    # less at most the wider rounding allowance.
    params = random_mlp(3, (4, 10, 10, 3))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(0.3, 0.7, (1, 4)), jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    spec = jc.LinfBall(x, 0.2)
    example = jax.tree.map(lambda a: a[0], spec)
    hidden = jc.bounds.intermediate_bounds(net, spec)
    lower = np.concatenate([np.asarray(b.lower).reshape(1, -1) for b in hidden], 1)
    upper = np.concatenate([np.asarray(b.upper).reshape(1, -1) for b in hidden], 1)
    unstable = np.flatnonzero((lower[0] < 0) & (upper[0] > 0))
    first_unstable = unstable[unstable < 10]
    assert first_unstable.size >= 4 and (unstable >= 10).sum() >= 4
    points = _sample(spec, rng, 40000)
    out, pre = _pre_activations(params, points)
    C = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    values = out @ np.asarray(C, np.float64).T
    splits = np.zeros((8, 20), np.int8)
    for d in range(8):
        chosen = rng.choice(unstable, size=1 + d % 3, replace=False)
        splits[d, chosen] = np.where(pre[d, chosen] >= 0, 1, -1)
    free = [np.setdiff1d(unstable, np.flatnonzero(s)) for s in splits]
    count = min(len(f) for f in free)
    candidates = np.stack([f[:count] for f in free]).astype(np.int32)
    first_count = min(np.isin(f, first_unstable).sum() for f in free)
    first_candidates = np.stack([f[np.isin(f, first_unstable)][:first_count]
                                 for f in free]).astype(np.int32)  # fmt: skip
    tile = (8, 1)
    alpha = rng.uniform(0, 1, (8, 2, 20)).astype(np.float32)
    beta = np.where(splits[:, None] != 0, rng.uniform(0, 2, (8, 2, 20)), 0).astype(np.float32)
    arrays = (np.tile(lower, tile), np.tile(upper, tile), splits, alpha, beta)
    first = jc.bounds.first_layer(net, example)
    np.testing.assert_allclose(first.jacobian, np.asarray(params[0][0]).T, rtol=1e-6)
    np.testing.assert_allclose(first.offset, params[0][1], rtol=1e-6, atol=1e-6)
    full = np.asarray(jc.bounds.split_estimates(net, example, C, *arrays, candidates))
    both = np.asarray(jc.bounds.split_estimates(net, example, C, *arrays, candidates, first,
                                                first_candidates))  # fmt: skip
    assert full.shape == (8, 2, count, 2) and both.shape == (8, 2, count + first_count, 2)
    np.testing.assert_array_equal(both[:, :, :count], full)
    for d in range(8):
        s = splits[d]
        parent = np.all(pre[:, s > 0] >= 0, axis=1) & np.all(pre[:, s < 0] <= 0, axis=1)
        for c, neuron in enumerate(candidates[d]):
            for side, inside in enumerate((pre[:, neuron] >= 0, pre[:, neuron] <= 0)):
                held = values[parent & inside] >= full[d, side, c] - 1e-5
                assert held.all(), (d, neuron, side)
        cheap = both[d, :, count:]
        expected = full[d, :, [list(candidates[d]).index(n) for n in first_candidates[d]]]
        assert np.all(cheap <= np.swapaxes(expected, 0, 1) + 1e-6)
        np.testing.assert_allclose(cheap, np.swapaxes(expected, 0, 1), atol=1e-3)
    with pytest.raises(ValueError, match="go together"):
        jc.bounds.split_estimates(net, example, C, *arrays, candidates, first)
    bad = {"candidates must have shape \\(8, c\\)": (candidates[:3],),
           "candidates must be integers": (candidates.astype(np.float32),),
           "candidates must be neuron indices in \\[0, 20\\)": (candidates + 20,),
           "first_candidates must be neuron indices in \\[0, 10\\)":
               (candidates, first, first_candidates + 10)}  # fmt: skip
    for match, arguments in bad.items():
        with pytest.raises((ValueError, TypeError), match=match):
            jc.bounds.split_estimates(net, example, C, *arrays, *arguments)


def test_a_domain_whose_bounds_cross_is_empty_and_its_bound_infinite():
    params = random_mlp(3, (4, 10, 10, 3))
    x = jnp.full((1, 4), 0.5, jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    example = jax.tree.map(lambda a: a[0], jc.LinfBall(x, 0.2))
    lower, upper = -jnp.ones((2, 20)), jnp.ones((2, 20))
    splits = jnp.zeros((2, 20), jnp.int8).at[1, 3].set(1)
    upper = upper.at[1, 3].set(-0.5)  # split z >= 0 where z <= -0.5: no input is left
    out = jc.bounds.bound_relu_domains(net, example, jnp.eye(3)[:2], jnp.zeros(2), lower, upper,
                                       splits, None, None, steps=2)  # fmt: skip
    assert np.all(np.isfinite(np.asarray(out.lower[0])))
    assert np.all(np.asarray(out.lower[1]) == np.inf)


def test_domain_arguments_are_checked_and_the_adaptive_slopes_are_the_starting_ones():
    params = random_mlp(3, (4, 10, 10, 3))
    x = jnp.full((1, 4), 0.5, jnp.float32)
    net = jc.trace(mlp_apply, params, x)
    example = jax.tree.map(lambda a: a[0], jc.LinfBall(x, 0.2))
    n = sum(stop - start for start, stop in jc.bounds.neuron_layout(net))
    assert n == 20
    lower, upper = -jnp.ones((2, n)), jnp.ones((2, n))
    splits, C = jnp.zeros((2, n), jnp.int8).at[1, 3].set(1), jnp.eye(3)[:2]
    slopes = jc.bounds.adaptive_slopes(net, example, C, lower, upper, splits)
    start = jc.bounds.bound_relu_domains(net, example, C, jnp.zeros(2), lower, upper, splits,
                                         None, None, steps=0)  # fmt: skip
    np.testing.assert_array_equal(slopes, start.alpha)
    assert slopes.shape == (2, 2, n) and float(slopes[1, 0, 3]) == 1.0  # split active: slope 1
    bad = {"lower": (-jnp.ones((2, n - 1)), upper, splits, "lower must have shape"),
           "splits": (lower, upper, splits[:1], "same number of domains"),
           "float": (lower, upper, splits.astype(jnp.float32), "splits must be integers")}
    for low, high, s, match in bad.values():
        with pytest.raises((ValueError, TypeError), match=match):
            jc.bounds.adaptive_slopes(net, example, C, low, high, s)
    with pytest.raises(ValueError, match=r"C must have shape \(K, 3\)"):
        jc.bounds.bound_relu_domains(net, example, jnp.eye(2), jnp.zeros(2), lower, upper,
                                     splits, None, None)  # fmt: skip
    with pytest.raises(ValueError, match=r"thresholds must have shape \(2,\)"):
        jc.bounds.bound_relu_domains(net, example, C, jnp.zeros(3), lower, upper, splits,
                                     None, None)  # fmt: skip
    # and the boxes of input splits
    boxes = jnp.zeros((5, 4)), jnp.ones((5, 4))
    bad = {"lower must have shape \\(D, 4\\)": (jnp.zeros((5, 3)), boxes[1], C, jnp.zeros(2)),
           "same number of boxes": (boxes[0], boxes[1][:4], C, jnp.zeros(2)),
           "C must have shape": (*boxes, jnp.eye(2), jnp.zeros(2)),
           "thresholds must have shape": (*boxes, C, jnp.zeros(()))}
    for match, arguments in bad.items():
        with pytest.raises(ValueError, match=match):
            jc.bounds.bound_input_domains(net, *arguments)


def _sample(spec, rng, num):
    lower, upper = (np.asarray(b[0], np.float64) for b in spec.box())
    points = rng.uniform(lower, upper, (num, lower.size))
    if isinstance(spec, jc.L1Ball):
        x = np.asarray(spec.x[0], np.float64)
        delta = points - x
        norm = np.abs(delta).sum(axis=1, keepdims=True)
        points = x + delta * np.minimum(1, float(spec.eps[0]) / norm) * rng.uniform(0, 1, (num, 1))
    return points


def test_input_domain_bounds_hold_at_every_sampled_point_of_each_box():
    params = random_mlp(4, (3, 12, 12, 4))
    rng = np.random.default_rng(1)
    lower = rng.uniform(-1, 0.5, (12, 3)).astype(np.float32)
    upper = (lower + rng.uniform(0.01, 0.8, (12, 3))).astype(np.float32)
    net = jc.trace(mlp_apply, params, jnp.zeros((1, 3)))
    C = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    bounds = jc.bounds.bound_input_domains(net, lower, upper, C, jnp.zeros(3))
    assert bounds.scores.shape == (12, 3) and np.all(np.asarray(bounds.scores) >= 0)
    # the output pass's slopes are optimised from CROWN's: never looser, here often tighter
    crown = np.asarray(jc.bounds.crown(net, jc.Box(lower, upper),
                                       jnp.broadcast_to(C, (12, 3, 4))).lower)  # fmt: skip
    assert np.all(np.asarray(bounds.lower) >= crown - 1e-6)
    assert np.mean(np.asarray(bounds.lower) > crown + 1e-4) > 0.2
    for d in range(12):
        points = rng.uniform(lower[d], upper[d], (5000, 3))
        values = _pre_activations(params, points)[0] @ np.asarray(C, np.float64).T
        assert np.all(values >= np.asarray(bounds.lower[d], np.float64) - 1e-5)
        point = np.asarray(bounds.point[d])
        assert np.all(point >= lower[d]) and np.all(point <= upper[d])
        np.testing.assert_allclose(
            bounds.values[d], _pre_activations(params, point[None])[0][0] @ np.asarray(C).T,
            rtol=1e-4, atol=1e-4,
        )  # fmt: skip


def test_input_domains_in_chunks_equal_one_box_at_a_time():
    """Many boxes go through `bound_input_domains` in chunks of INPUT_CHUNK on a CPU: the
    chunked call must give each box what bounding it alone gives."""
    params = random_mlp(6, (3, 12, 12, 4))
    rng = np.random.default_rng(3)
    count = 3 * INPUT_CHUNK
    lower = rng.uniform(-1, 0.5, (count, 3)).astype(np.float32)
    upper = (lower + rng.uniform(0.01, 0.8, (count, 3))).astype(np.float32)
    net = jc.trace(mlp_apply, params, jnp.zeros((1, 3)))
    C, thresholds = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32), jnp.zeros(2)
    together = jc.bounds.bound_input_domains(net, lower, upper, C, thresholds)
    for d in rng.choice(count, 12, replace=False):
        alone = jc.bounds.bound_input_domains(net, lower[d : d + 1], upper[d : d + 1], C,
                                              thresholds)  # fmt: skip
        for field in ("lower", "scores", "point", "values", "coefficients"):
            np.testing.assert_allclose(getattr(together, field)[d], getattr(alone, field)[0],
                                       rtol=1e-5, atol=1e-6, err_msg=field)  # fmt: skip


def test_clipped_boxes_keep_every_point_that_can_reach_the_region():
    """Input domain clipping (`_clip_boxes`) on the real bounds of random boxes: every sampled
    point left out of a clipped box clears the thresholds by the margin claimed, every point
    that reaches the region lies inside, and the linear bound the clipping reads holds."""
    params = random_mlp(5, (3, 12, 12, 4))
    rng = np.random.default_rng(2)
    lower = rng.uniform(-1, 0.5, (16, 3)).astype(np.float32)
    upper = (lower + rng.uniform(0.02, 0.3, (16, 3))).astype(np.float32)
    net = jc.trace(mlp_apply, params, jnp.zeros((1, 3)))
    C = rng.normal(size=(2, 4)).astype(np.float32)
    bounds = jc.bounds.bound_input_domains(net, lower, upper, jnp.asarray(C), jnp.zeros(2))
    bound, a = np.asarray(bounds.lower, np.float64), np.asarray(bounds.coefficients, np.float64)
    cut = 0
    for d in range(16):
        x = rng.uniform(lower[d], upper[d], (20000, 3))
        v = _pre_activations(params, x)[0] @ C.astype(np.float64).T
        vertex = np.where(a[d] >= 0, lower[d], upper[d])  # (K, 3)
        linear = bound[d] + np.einsum("kj,nkj->nk", a[d], x[:, None] - vertex)
        assert np.all(v >= linear - 1e-5)
        t = np.quantile(v, 0.4, axis=0)  # thresholds that part of the box reaches on each row
        new_lo, new_hi, margin, empty = _clip_boxes(lower[d : d + 1], upper[d : d + 1],
                                                    bound[d : d + 1], a[d : d + 1], t)  # fmt: skip
        assert np.all(new_lo >= lower[d]) and np.all(new_hi <= upper[d])
        inside = np.all((x >= new_lo) & (x <= new_hi), axis=1) & ~empty
        assert np.all(np.max(v[~inside] - t, axis=1) > margin[0] - 1e-6), d
        assert inside.all() if np.isinf(margin[0]) else margin[0] > 0
        cut += np.count_nonzero(~inside)
    assert cut > 20000, cut


def test_a_box_is_halved_by_smear_where_that_can_close_its_gap_else_by_weighted_width():
    """Input splits: the largest smear |a_j| (u_j - l_j) chooses where some smear reaches the
    gap, the width weighted by the first activations' sensitivity (`_input_weights`: the l1
    norms of a dense first layer's columns, per unit of width) where none does, and a coordinate
    float32 cannot halve is passed over."""
    params = [(jnp.asarray([[1.0, -2.0], [0.5, 0.5], [0.0, 0.0]]), jnp.zeros(2)),
              (jnp.ones((2, 1)), jnp.zeros(1))]  # fmt: skip
    net = jc.trace(mlp_apply, params, jnp.zeros((1, 3)))
    lower, upper = np.array([[-1.0, 0.0, 0.0]]), np.array([[1.0, 0.5, 2.0]])
    weights = _input_weights(net, lower, upper, Clock(30))
    np.testing.assert_allclose(weights, [3.0, 1.0, 0.0], atol=2e-3)  # IBP's rounding allowance
    a = np.array([[3.0, 0.1, 0.0], [1e-2, 1e-9, 0.0], [1e-2, 1e-9, 0.0]])
    width = np.array([[1.0, 1.0, 2.0], [1e-7, 0.5, 2.0], [1e-7, 0.5, 2.0]])
    scores = _split_scores(a, width, weights, gap=np.array([1.0, 0.02, 1e-10]))
    assert np.argmax(scores, axis=1).tolist() == [0, 1, 0]  # smear, weighted width, smear
    np.testing.assert_allclose(scores[1], [3e-7, 0.5, 0.0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores[2], [1e-9, 5e-10, 0.0])
    x = np.float32(0.3)
    lower = np.array([[x, -1.0, 2.0], [x, 0.0, 2.0], [x, 0.0, 2.0]], np.float32)
    upper = np.array([[np.nextafter(x, np.float32(1)), 1.0, 2.0], [x + 0.25, 0.5, 2.0],
                      [np.nextafter(x, np.float32(1)), 0.0, 2.0]], np.float32)  # fmt: skip
    dim, mid, splittable = _halving(lower, upper, np.array([[9.0, 1.0, 5.0]] * 3))
    assert dim[:2].tolist() == [1, 0] and splittable.tolist() == [True, True, False]
    np.testing.assert_array_equal(mid[:2], np.array([0.0, x + 0.125], np.float32))


@functools.cache
def _cases(seed, eps, images=4):
    """A random MLP (9 ReLUs), l_inf balls and their exact minimum margins (enumerated)."""
    params = random_mlp(seed)
    x = jnp.asarray(np.random.default_rng(20 + seed).uniform(0.2, 0.8, (images, 3)), jnp.float32)
    y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
    spec = jc.LinfBall(x, eps)
    lower, upper = (np.asarray(v, np.float64) for v in spec.box())
    exact = [min(exact_min_margin(params, lower[i], upper[i], y[i], j)
                 for j in range(3) if j != y[i]) for i in range(images)]  # fmt: skip
    return params, spec, y, exact


@pytest.mark.parametrize(
    "seed,split,branching",
    [pytest.param(s, split, "babsr", marks=pytest.mark.slow) for s in (0, 1, 2, 3)
     for split in ("relu", "input")]
    + [pytest.param(s, "relu", "fsb", marks=pytest.mark.slow) for s in (0, 1, 2, 3, 4)],
)  # fmt: skip
def test_branch_and_bound_agrees_with_enumeration(seed, split, branching):
    for eps in (0.1, 0.15, 0.25):
        params, spec, y, exact_minima = _cases(seed, eps)
        net = jc.trace(mlp_apply, params, spec.x[:1])
        results = jc.exact.verify(net, spec, y, strategy="bab", split=split, attack_steps=0,
                                  branching=branching, time_limit=30)  # fmt: skip
        lower, upper = (np.asarray(v, np.float64) for v in spec.box())
        for i, (r, exact) in enumerate(zip(results, exact_minima)):
            if abs(exact) < 1e-4:
                assert r.status != ("verified" if exact < 0 else "falsified")
                continue
            assert r.status == ("verified" if exact > 0 else "falsified"), (i, eps, exact, r)
            assert r.margin_lower <= exact + 1e-5
            if r.status == "falsified":
                z = r.counterexample
                assert np.all(z >= lower[i]) and np.all(z <= upper[i])
                assert int(jnp.argmax(mlp_apply(params, z[None]))) != y[i]


def _wide_mlp(p, x):
    for w, b in p[:-1]:
        x = jax.nn.relu(x @ w + b)
    return x @ p[-1][0] + p[-1][1]


def test_the_time_limit_holds_with_compilation_and_never_verifies():
    # A network no earlier test compiled, and a set far too large to settle in a second: every
    # answer must come within the limit plus max(1 s, 5%), as "unknown".
    rng = np.random.default_rng(7)
    sizes = (37, 64, 64, 64, 5)
    p = [(jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32), jnp.zeros(b))
         for a, b in zip(sizes, sizes[1:])]  # fmt: skip
    x = jnp.asarray(rng.uniform(0, 1, (2, 37)), jnp.float32)
    net = jc.trace(_wide_mlp, p, x[:1])
    y = np.asarray(jnp.argmax(_wide_mlp(p, x), axis=1))
    for strategy, split in (("bab", "relu"), ("bab", "input")):
        began = time.perf_counter()
        results = jc.exact.verify(net, jc.LinfBall(x, 0.08), y, strategy=strategy, split=split,
                                  time_limit=1.0, attack_steps=0)  # fmt: skip
        took = time.perf_counter() - began
        assert took <= 2 * (1.0 + 1.0), took  # two images of 1 s each, plus 1 s each
        assert all(r.status in ("unknown", "falsified") for r in results), results


def test_bab_answers_vnnlib_properties_and_keeps_their_time_limit():
    params = random_mlp(5, (3, 5, 4, 2))
    net = jc.trace(mlp_apply, params, jnp.zeros((1, 3)))
    lower, upper = np.full(3, 0.2), np.full(3, 0.6)
    top = -exact_min_margin(params, lower, upper, 1, 0)  # the exact maximum of y_0 - y_1

    def decide(threshold, **kw):  # "y_0 - y_1 >= threshold" is reachable
        unsafe = [(np.array([[-1.0, 1.0]]), np.array([-threshold]))]
        prop = jc.Property([jc.Case(lower, upper, unsafe)])
        return jc.exact.verify_property(net, prop, strategy="bab", attack_steps=0, **kw)

    assert decide(top - 0.01, time_limit=30).result == "sat"
    assert decide(top + 0.01, time_limit=30).result == "unsat"
    began = time.perf_counter()
    result = decide(top + 0.01, time_limit=0.05)
    assert result.result in ("timeout", "unsat")
    assert time.perf_counter() - began <= 1.05


def test_the_pool_adds_and_takes_like_a_list():
    # Positions move when domains are taken; what is held, and each domain's arrays together,
    # must stay those of a list.
    rng = np.random.default_rng(0)
    pool, reference, serial = _Pool(), [], 0
    for _ in range(200):
        count = int(rng.integers(0, 40))
        new = np.arange(serial, serial + count)
        serial += count
        pool.add({"values": new.astype(np.float64), "rows": np.stack([new, -new], axis=1)})
        reference += list(new)
        assert pool.size == len(reference)
        if pool.size and rng.uniform() < 0.7:
            take = rng.choice(pool.size, int(rng.integers(1, pool.size + 1)), replace=False)
            expected = pool["values"][take].copy()
            taken = pool.take(take)
            np.testing.assert_array_equal(taken["values"], expected)
            np.testing.assert_array_equal(taken["rows"][:, 1], -taken["rows"][:, 0])
            for v in expected:
                reference.remove(v)
        assert sorted(pool["values"]) == sorted(reference)
        np.testing.assert_array_equal(pool["rows"][:, 0], pool["values"])


def test_a_computation_begun_by_the_clock_is_waited_for_within_its_deadline():
    clock = Clock(30)
    wait = clock.start(jax.jit(lambda v: v + 1), jnp.ones(3))
    np.testing.assert_array_equal(wait(), np.full(3, 2.0))
    short = Clock(0.2)
    began = time.perf_counter()
    wait = short.start(lambda: time.sleep(1.0))
    with pytest.raises(OutOfTime):
        wait()
    assert time.perf_counter() - began < 0.6


def test_calls_computed_at_once_keep_their_order_errors_and_deadline():
    """`Clock.run_each` (two calls of a batch at a time): results in the order of the calls,
    a call's error raised, and OutOfTime at the deadline while calls still compute."""
    clock = Clock(30)
    square = jax.jit(lambda v: v * v)
    calls = [(jnp.full(3, float(i)),) for i in range(5)]
    out = clock.run_each(square, calls, 2)
    assert [float(o[0]) for o in out] == [0.0, 1.0, 4.0, 9.0, 16.0]

    def fails(v):
        raise ValueError("no bound")

    with pytest.raises(ValueError, match="no bound"):
        clock.run_each(fails, calls, 2)
    short = Clock(0.2)
    began = time.perf_counter()
    with pytest.raises(OutOfTime):
        short.run_each(lambda v: time.sleep(1.0) or v, calls, 2)
    assert time.perf_counter() - began < 0.6
