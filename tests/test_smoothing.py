"""Randomized smoothing against NumPy/SciPy re-implementations and closed-form cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

import jaxcert as jc

pytestmark = pytest.mark.usefixtures("either_x64")  # every test with float64 off and on
X64_OFF_ONLY = pytest.mark.parametrize(  # the float64 twin runs in the slow set
    "either_x64", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["x64-off", "x64-on"],
    indirect=True,
)
# ... except long statistical runs, whose x64 paths other tests cover
ONE_X64_MODE = pytest.mark.parametrize("either_x64", [False], ids=["x64-off"], indirect=True)

SIGMA = 0.5


def linear_apply(params, x):
    """Two-class linear classifier: class 1 where w . x + b > 0."""
    score = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
    return jnp.stack([-score, score], axis=-1)


def three_class_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


LINEAR = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.float32(0.1)}
THREE = {"w": jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, -0.5, 0.0]]), "b": jnp.zeros(3)}
POINTS = jnp.array(
    [[0.5, 0.1, 0.2], [0.0, 0.0, 0.0], [1.0, -1.0, 0.3], [-0.3, 0.2, 0.1], [2.0, -1.0, 0.0]],
    jnp.float32,
)


def index_keys(seed, indices):
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), indices)


def numpy_certify(counts0, counts, n, alpha, sigma):
    """CERTIFY written out directly from the paper with statsmodels and SciPy."""
    predictions, radii = [], []
    for c0, c in zip(np.asarray(counts0), np.asarray(counts)):
        top = int(np.argmax(c0))
        p_lower = proportion_confint(int(c[top]), n, alpha=2 * alpha, method="beta")[0]
        if p_lower < 0.5:
            predictions.append(-1)
            radii.append(0.0)
        else:
            predictions.append(top)
            radii.append(sigma * scipy.stats.norm.ppf(p_lower))
    return np.array(predictions), np.array(radii)


def test_certify_matches_numpy_reimplementation():
    key, n, alpha = jax.random.key(3), 20_000, 0.001
    points = jnp.concatenate([POINTS, jnp.array([[0.0, 0.05, 0.0]])])  # on the boundary
    cert = jc.smoothing.certify(
        linear_apply,
        LINEAR,
        points,
        key,
        sigma=SIGMA,
        num_classes=2,
        n0=100,
        n=n,
        alpha=alpha,
        batch_size=512,
    )
    # The selection counts come from the key documented in `certify`: fold_in(key_i, 0).
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(index_keys(3, jnp.arange(6)), 0)
    counts0 = jc.smoothing.sample_counts(
        linear_apply, LINEAR, points, keys, sigma=SIGMA, num=100, num_classes=2
    )
    np.testing.assert_array_equal(cert.selected, np.argmax(counts0, axis=1))
    assert cert.counts.sum(axis=1).tolist() == [n] * 6
    prediction, radius = numpy_certify(counts0, cert.counts, n, alpha, SIGMA)
    np.testing.assert_array_equal(cert.prediction, prediction)
    np.testing.assert_allclose(cert.radius, radius, rtol=1e-9, atol=1e-12)
    assert (cert.prediction == -1).any() and (cert.prediction != -1).any()


def test_predict_matches_numpy_reimplementation():
    x = jnp.array([[0.0, 0.0, -0.05], [0.5, 0.1, 0.2], [0.01, 0.0, 0.0]], jnp.float32)
    prediction, counts = jc.smoothing.predict(
        linear_apply, LINEAR, x, jax.random.key(5), sigma=SIGMA, num_classes=2, n=400, alpha=0.05
    )
    for pred, c in zip(prediction, counts):
        top, second = np.argsort(-c, kind="stable")[:2]
        pvalue = scipy.stats.binomtest(int(c[top]), int(c[top] + c[second]), 0.5).pvalue
        assert pred == (top if pvalue <= 0.05 else -1)
    assert -1 in prediction and 1 in prediction


@X64_OFF_ONLY
def test_counts_do_not_depend_on_batching():
    idx = jnp.arange(5)
    whole = jc.smoothing.sample_counts(
        linear_apply,
        LINEAR,
        POINTS,
        index_keys(1, idx),
        sigma=SIGMA,
        num=3000,
        num_classes=2,
        batch_size=1000,
    )
    parts = [
        jc.smoothing.sample_counts(
            linear_apply,
            LINEAR,
            POINTS[s],
            index_keys(1, idx[s]),
            sigma=SIGMA,
            num=3000,
            num_classes=2,
            batch_size=bs,
        )
        for s, bs in ((slice(0, 2), 7), (slice(2, 5), 3000))
    ]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    # A single key means fold_in(key, position), the same as explicit per-position keys.
    single = jc.smoothing.sample_counts(
        linear_apply,
        LINEAR,
        POINTS,
        jax.random.key(1),
        sigma=SIGMA,
        num=3000,
        num_classes=2,
        batch_size=256,
    )
    np.testing.assert_array_equal(whole, single)


def _true_p_one(noise, scale, margin):
    """P(margin + scale * noise > 0) for one-dimensional standardised noise."""
    dist = {
        "gaussian": scipy.stats.norm(),
        "laplace": scipy.stats.laplace(),
        "uniform": scipy.stats.uniform(-1, 2),
    }[noise]
    return dist.sf(-margin / scale)


@pytest.mark.parametrize("noise", ["gaussian", "laplace", "uniform"])
def test_counts_are_binomial_with_the_exact_probability(noise):
    """One-dimensional linear classifier: P(class 1) is a closed-form CDF of the noise."""
    params = {"w": jnp.array([1.0]), "b": jnp.float32(0.0)}
    x = jnp.array([[-0.4], [0.0], [0.3], [0.9]], jnp.float32)
    n = 50_000
    counts = np.asarray(
        jc.smoothing.sample_counts(
            linear_apply,
            params,
            x,
            jax.random.key(11),
            sigma=SIGMA,
            num=n,
            num_classes=2,
            noise=noise,
        )
    )
    for margin, (_, ones) in zip(np.asarray(x[:, 0]), counts):
        p = _true_p_one(noise, SIGMA, margin)
        assert scipy.stats.binomtest(int(ones), n, p).pvalue > 1e-4, (noise, margin, ones / n)


def test_smoothed_linear_classifier_radius():
    """For a linear f, g's exact radius is the distance to the hyperplane: sigma Phi^-1(pA)."""
    n, alpha = 100_000, 0.001
    cert = jc.smoothing.certify(
        linear_apply,
        LINEAR,
        POINTS,
        jax.random.key(7),
        sigma=SIGMA,
        num_classes=2,
        n0=10_000,  # the second point's pA is 0.535: 100 selection samples miss it 1 time in 4
        n=n,
        alpha=alpha,
        batch_size=5000,
    )
    w = np.asarray(LINEAR["w"], np.float64)
    score = np.asarray(POINTS, np.float64) @ w + 0.1
    true_radius = np.abs(score) / np.linalg.norm(w)
    p_a = scipy.stats.norm.cdf(true_radius / SIGMA)
    np.testing.assert_array_equal(cert.prediction, (score > 0).astype(int))
    # With these fixed keys the bound holds (it fails with probability <= alpha per point) ...
    assert np.all(cert.radius <= true_radius)
    # ... and is not loose: nA is at least its 1e-6 binomial quantile, whose bound gives r_min.
    k_min = scipy.stats.binom.ppf(1e-6, n, p_a)
    r_min = SIGMA * scipy.stats.norm.ppf(scipy.stats.beta.ppf(alpha, k_min, n - k_min + 1))
    assert np.all(cert.radius >= r_min)


def test_two_class_radius_option():
    params = {"w": jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), "b": jnp.zeros(3)}
    x = jnp.array([[0.6, 0.0], [0.2, 0.3], [1.5, -1.0]], jnp.float32)
    n, alpha = 20_000, 0.001
    cert = jc.smoothing.certify(
        three_class_apply,
        params,
        x,
        jax.random.key(2),
        sigma=SIGMA,
        num_classes=3,
        n=n,
        alpha=alpha,
        pb_upper=True,
    )
    for pred, radius, top, c in zip(cert.prediction, cert.radius, cert.selected, cert.counts):
        p_a = proportion_confint(int(c[top]), n, alpha=alpha, method="beta")[0]
        uppers = [
            proportion_confint(int(c[j]), n, alpha=alpha / 2, method="beta")[1]
            for j in range(3)
            if j != top
        ]
        p_b = min(max(uppers), 1 - p_a)
        if p_a > p_b:
            want = 0.5 * SIGMA * (scipy.stats.norm.ppf(p_a) - scipy.stats.norm.ppf(p_b))
            assert pred == top and radius == pytest.approx(want, rel=1e-7)
        else:
            assert pred == -1 and radius == 0.0


def test_radius_cap():
    want = 0.25 * scipy.stats.norm.ppf(0.001 ** (1 / 10_000))
    assert jc.smoothing.radius_cap(0.25, 10_000, 0.001) == pytest.approx(want, rel=1e-9)


def test_certified_accuracy_by_hand():
    radius = np.array([0.0, 0.3, 0.6, 1.2, 0.0])
    correct = np.array([False, True, True, True, True])
    got = jc.smoothing.certified_accuracy(radius, correct, [0.0, 0.25, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(got, [4 / 5, 3 / 5, 2 / 5, 1 / 5, 0.0])
    table = jc.smoothing.certified_accuracy_table(radius, correct, [0.0, 0.5], alpha=0.001)
    m, rho = 5, 0.001
    slack = 0.001 + np.sqrt(2 * 0.001 * 0.999 * np.log(1 / rho) / m) + 2 * np.log(1 / rho) / (3 * m)
    np.testing.assert_allclose(table.lower_bound, np.maximum(table.accuracy - slack, 0))
    big = jc.smoothing.certified_accuracy_lower_bound(0.8, 10_000, 0.001)
    assert 0.78 < big < 0.8


BAD = [
    (dict(sigma=0.0), "sigma"),
    (dict(sigma=-1.0), "sigma"),
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=1.0), "alpha"),
    (dict(n0=0), "n0"),
    (dict(n=0), "n"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=3), "num_classes"),
    (dict(batch_size=0), "batch_size"),
    (dict(noise="cauchy"), "noise"),
    (dict(noise="laplace", pb_upper=True), "pb_upper"),
    (dict(target_radius=0.0), "target_radius"),
    (dict(target_radius=float("nan")), "target_radius"),
    (dict(target_radius=0.5, pb_upper=True), "target_radius"),
]


@pytest.mark.parametrize("override, match", BAD)
def test_certify_bad_arguments(override, match):
    kwargs = dict(sigma=SIGMA, num_classes=2, n0=10, n=100, alpha=0.01) | override
    with pytest.raises(ValueError, match=match):
        jc.smoothing.certify(linear_apply, LINEAR, POINTS, jax.random.key(0), **kwargs)


def test_bad_inputs():
    kwargs = dict(sigma=SIGMA, num_classes=2, n=100)
    with pytest.raises(ValueError, match="x"):
        jc.smoothing.certify(linear_apply, LINEAR, POINTS[0], jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        jc.smoothing.certify(
            linear_apply, LINEAR, POINTS.at[1, 1].set(jnp.nan), jax.random.key(0), **kwargs
        )
    with pytest.raises(ValueError, match="key"):
        jc.smoothing.certify(linear_apply, LINEAR, POINTS, index_keys(0, jnp.arange(3)), **kwargs)
    with pytest.raises(TypeError, match="n"):
        jc.smoothing.certify(
            linear_apply, LINEAR, POINTS, jax.random.key(0), sigma=SIGMA, num_classes=2, n=10.5
        )
    with pytest.raises(ValueError, match="alpha"):
        jc.smoothing.predict(
            linear_apply, LINEAR, POINTS, jax.random.key(0), sigma=SIGMA, num_classes=2, alpha=2.0
        )
    with pytest.raises(ValueError, match="radius"):
        jc.smoothing.certified_accuracy([0.1, 0.2], [True], [0.0])


@pytest.mark.parametrize("fn", [jc.smoothing.certify, jc.smoothing.predict])
def test_bad_batches_are_named_before_sampling(fn):
    """An empty batch (was ZeroDivisionError), n=0 in predict (named `num`) and images of
    another shape than the model's (a Flax ScopeParamShapeError) are one ValueError each."""
    kwargs = dict(sigma=SIGMA, num_classes=10)
    apply_fn, params = jc.models.init_model({"kind": "mlp", "hidden": [4]}, jax.random.key(0),
                                            (8, 8, 1))  # fmt: skip
    x = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match=r"x must hold at least one input, got shape \(0, 8"):
        fn(apply_fn, params, x[:0], jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="^n must be >= 1, got 0"):
        fn(apply_fn, params, x, jax.random.key(0), n=0, **kwargs)
    with pytest.raises(ValueError, match=r"apply_fn cannot take inputs shaped like x, \(N, 28, 28"):
        fn(apply_fn, params, jnp.zeros((2, 28, 28, 1)), jax.random.key(0), **kwargs)


@ONE_X64_MODE
def test_certify_coverage_over_many_runs():
    """P(certified radius > true radius) <= alpha, measured over 4000 independent runs."""
    runs, n, alpha = 4000, 500, 0.05
    x = jnp.tile(jnp.array([[0.5, 0.0, 0.0]], jnp.float32), (runs, 1))
    cert = jc.smoothing.certify(
        linear_apply,
        LINEAR,
        x,
        jax.random.key(42),
        sigma=SIGMA,
        num_classes=2,
        n0=10,
        n=n,
        alpha=alpha,
        batch_size=runs * 8,
    )
    w = np.asarray(LINEAR["w"], np.float64)
    true_radius = (0.5 + 0.1) / np.linalg.norm(w)
    wrong = int(np.sum((cert.radius > true_radius) | (cert.prediction == 0)))
    pvalue = scipy.stats.binomtest(wrong, runs, alpha, alternative="greater").pvalue
    assert pvalue > 1e-3, (wrong, runs)
    assert np.mean(cert.prediction == 1) > 0.75  # not vacuous: most runs certify


def _sequential_runs(true_radius, target, runs=2000, n=4000, alpha=0.05, seed=7):
    """`runs` independent certificates of one point of `linear_apply` whose smoothed radius is
    `true_radius`, with fixed n and with target_radius=target (the same keys)."""
    w = np.asarray(LINEAR["w"], np.float64)
    point = np.zeros(3)
    point[0] = (true_radius * np.linalg.norm(w) - 0.1) / w[0]  # w . x + b = R* |w|
    x = jnp.tile(jnp.asarray(point[None], jnp.float32), (runs, 1))
    common = dict(sigma=SIGMA, num_classes=2, n0=10, n=n, alpha=alpha, batch_size=runs * 8)
    key = jax.random.key(seed)
    fixed = jc.smoothing.certify(linear_apply, LINEAR, x, key, **common)
    sequential = jc.smoothing.certify(linear_apply, LINEAR, x, key, target_radius=target, **common)
    return fixed, sequential


@ONE_X64_MODE
def test_sequential_certify_keeps_alpha_just_outside_the_true_radius():
    """Smoothed radius 0.48 (closed form, linear classifier), target 0.5: over 2000 runs the
    rate of certifying at 0.5, and of any radius above the true one, is <= alpha + 3 s.e."""
    alpha, runs = 0.05, 2000
    fixed, sequential = _sequential_runs(0.48, 0.5, runs=runs, alpha=alpha)
    limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert np.mean(sequential.radius >= 0.5) <= limit
    wrong = (sequential.radius > 0.48) | (sequential.prediction == 0)
    assert np.mean(wrong) <= limit
    assert np.all(sequential.num_samples <= fixed.num_samples)
    assert np.mean(sequential.num_samples) < np.mean(fixed.num_samples)


@ONE_X64_MODE
def test_sequential_certify_is_as_good_well_inside_and_cheaper():
    """Smoothed radius 0.45, target 0.3: certified at 0.3 at least as often as fixed-n
    CERTIFY, with fewer samples."""
    fixed, sequential = _sequential_runs(0.45, 0.3)
    assert np.mean(sequential.radius >= 0.3) >= np.mean(fixed.radius >= 0.3) > 0.9
    assert np.mean(sequential.num_samples) < 0.2 * np.mean(fixed.num_samples)
    np.testing.assert_array_equal(fixed.num_samples, 10 + 4000)


@X64_OFF_ONLY
def test_sequential_counts_are_a_prefix_of_the_fixed_sample_stream():
    """Rounds draw samples [start, start + num): an image that used N estimation samples has
    the counts of the first N samples of fixed-n CERTIFY's stream."""
    x, batch = POINTS, 5 * 64  # 64 samples per image and forward pass: one compilation
    cert = jc.smoothing.certify(
        three_class_apply, THREE, x, jax.random.key(3), sigma=SIGMA, num_classes=3, n0=20,
        n=1000, target_radius=0.2, batch_size=batch,
    )  # fmt: skip
    used = cert.num_samples - 20
    assert set(used.tolist()) - {100, 200, 400, 800, 1000} == set()
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(index_keys(3, jnp.arange(5)), 1)
    for i in range(len(x)):
        want = jc.smoothing.sample_counts(
            three_class_apply, THREE, x[i : i + 1], keys[i : i + 1], sigma=SIGMA,
            num=int(used[i]), num_classes=3, batch_size=64,
        )  # fmt: skip
        np.testing.assert_array_equal(cert.counts[i], np.asarray(want)[0])
    # start: two consecutive ranges add up to the whole.
    head, tail, whole = (
        jc.smoothing.sample_counts(three_class_apply, THREE, x, keys, sigma=SIGMA,
                                   num_classes=3, num=num, start=start, batch_size=batch)
        for start, num in ((0, 300), (300, 700), (0, 1000))
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(head) + np.asarray(tail), np.asarray(whole))


def test_shared_noise_gives_each_image_the_counts_of_its_own_stream():
    """shared_noise=True: image i's counts are those of the standard stream of the key itself
    (so each certificate keeps its guarantee); one draw serves every image."""
    key = jax.random.key(11)
    shared = jc.smoothing.sample_counts(three_class_apply, THREE, POINTS, key, sigma=SIGMA,
                                        num=500, num_classes=3, shared_noise=True)  # fmt: skip
    same_key = jnp.stack([key] * len(POINTS))  # every image given the key itself
    alone = jc.smoothing.sample_counts(three_class_apply, THREE, POINTS, same_key, sigma=SIGMA,
                                       num=500, num_classes=3)  # fmt: skip
    np.testing.assert_array_equal(shared, alone)
    # A plain loop over the key's noise rows (tests/test_stream.py checks them against NumPy).
    noise = np.asarray(jc.smoothing.NOISES["gaussian"].rows(key, 0, 500, 3, POINTS.dtype))
    for i, point in enumerate(np.asarray(POINTS)):
        logits = three_class_apply(THREE, jnp.asarray(point + SIGMA * noise))
        want = np.bincount(np.argmax(np.asarray(logits), axis=1), minlength=3)
        np.testing.assert_array_equal(np.asarray(shared)[i], want)
    cert = jc.smoothing.certify(three_class_apply, THREE, POINTS, key, sigma=SIGMA,
                                num_classes=3, n0=20, n=500, shared_noise=True)  # fmt: skip
    assert cert.counts.sum(axis=1).tolist() == [500] * len(POINTS)
    with pytest.raises(ValueError, match="single key"):
        jc.smoothing.certify(three_class_apply, THREE, POINTS, same_key, sigma=SIGMA,
                             num_classes=3, shared_noise=True)  # fmt: skip


@X64_OFF_ONLY
def test_flax_models_work_unchanged():
    """A linen CNN and a flax.nnx MLP are certified through the same apply_fn convention."""
    from flax import nnx

    x, _ = jc.data.load_digits("test")
    x = jnp.asarray(x[:3])
    cnn_apply, cnn_params = jc.models.init_model({"kind": "cnn"}, jax.random.key(0), x.shape[1:])

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 32, rngs=rngs)
            self.out = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, v):
            return self.out(jax.nn.relu(self.hidden(v.reshape(v.shape[0], -1))))

    nnx_apply, nnx_params = jc.from_nnx(Net(nnx.Rngs(0)))
    for apply_fn, params in ((cnn_apply, cnn_params), (nnx_apply, nnx_params)):
        cert = jc.smoothing.certify(
            apply_fn, params, x, jax.random.key(1), sigma=0.25, num_classes=10, n0=20, n=100
        )
        assert cert.counts.sum(axis=1).tolist() == [100] * 3
        # Counts equal a plain loop over the same noise rows (checked in tests/test_stream.py).
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(index_keys(1, jnp.arange(3)), 1)
        for i in range(3):
            rows = jc.smoothing.NOISES["gaussian"].rows(keys[i], 0, 100, 64, x.dtype)
            noise = rows.reshape(100, *x.shape[1:])
            votes = np.argmax(np.asarray(apply_fn(params, x[i] + 0.25 * noise)), axis=1)
            np.testing.assert_array_equal(cert.counts[i], np.bincount(votes, minlength=10))


@X64_OFF_ONLY
def test_bfloat16_counts_are_those_of_the_bfloat16_classifier():
    x, _ = jc.data.load_digits("test")
    x = x[:5]
    apply_fn, params = jc.models.init_model(
        {"kind": "mlp", "hidden": [32]}, jax.random.key(0), x.shape[1:]
    )
    key, kw = jax.random.key(3), dict(sigma=0.5, num=2000, num_classes=10, batch_size=1000)
    low = jc.smoothing.sample_counts(apply_fn, params, x, key, compute_dtype=jnp.bfloat16, **kw)
    half = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)

    def by_hand(p, z):  # the same classifier, cast by hand: noise drawn in float32, then cast
        return apply_fn(half, z.astype(jnp.bfloat16))

    np.testing.assert_array_equal(low, jc.smoothing.sample_counts(by_hand, params, x, key, **kw))
    full = jc.smoothing.sample_counts(apply_fn, params, x, key, **kw)
    assert np.abs(np.asarray(low) - np.asarray(full)).sum() < 0.05 * 5 * 2000  # close, not equal
    with pytest.raises(ValueError, match="compute_dtype"):
        jc.smoothing.sample_counts(apply_fn, params, x, key, compute_dtype=jnp.int8, **kw)
