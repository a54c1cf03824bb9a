"""The noise stream of randomized smoothing against a NumPy Threefry oracle and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.extend.random import threefry2x32_p
from threefry import stream_noise, stream_words, threefry2x32

import jaxcert as jc
from jaxcert.smoothing import NOISES
from jaxcert.smoothing._stream import flat_counters, stream_bits
from jaxcert.smoothing._stream import threefry2x32 as jnp_threefry

KEY = jax.random.key(5)
KEY_DATA = np.asarray(jax.random.key_data(KEY))


def test_the_numpy_oracle_is_jaxs_threefry():
    # jax.random.bits xors the two words of threefry2x32 at flat counters: the oracle must too.
    n, size = 6, 9
    flat = np.arange(n * size, dtype=np.uint64)
    b1, b2 = threefry2x32(KEY_DATA, (flat >> np.uint64(32)).astype(np.uint32),
                          flat.astype(np.uint32))  # fmt: skip
    np.testing.assert_array_equal((b1 ^ b2).reshape(n, size), jax.random.bits(KEY, (n, size)))


def test_the_straight_line_threefry_is_jaxs_primitive_bit_for_bit():
    rng = np.random.default_rng(0)
    edges = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], np.uint32)
    for _ in range(20):
        k0, k1 = rng.integers(0, 2**32, 2, dtype=np.uint32)
        x0 = np.concatenate([edges, rng.integers(0, 2**32, 500, dtype=np.uint32)])
        x1 = np.concatenate([edges[::-1], rng.integers(0, 2**32, 500, dtype=np.uint32)])
        got = jax.jit(jnp_threefry)(k0, k1, x0, x1)
        want = threefry2x32_p.bind(jnp.uint32(k0), jnp.uint32(k1), jnp.asarray(x0), jnp.asarray(x1))
        np.testing.assert_array_equal(np.stack(got), np.stack(want))


@pytest.mark.parametrize("first,size", [(0, 1), (3, 9), (1000, 784), (2**31 - 3, 150_528)])
def test_rows_from_any_row_on_match_the_oracle(first, size):
    count = 3
    got = np.asarray(jax.jit(stream_bits, static_argnums=(2, 3, 4))(KEY, first, count, size, 32))
    np.testing.assert_array_equal(got, stream_words(KEY_DATA, first, count, size))
    high, low = flat_counters(first, count, size)
    want = (np.uint64(first) + np.arange(count, dtype=np.uint64))[:, None] * np.uint64(
        size
    ) + np.arange(size, dtype=np.uint64)  # 64-bit indices, past 2^32 for the last case
    joined = (np.asarray(high).astype(np.uint64) << np.uint64(32)) | np.asarray(low)
    np.testing.assert_array_equal(joined, want)


def test_a_range_of_rows_is_the_same_whatever_range_computes_it():
    rows = jax.jit(NOISES["gaussian"].rows, static_argnums=(2, 3, 4))
    whole = rows(KEY, 0, 40, 13, jnp.float32)
    parts = [rows(KEY, a, b - a, 13, jnp.float32) for a, b in ((0, 7), (7, 8), (8, 40))]
    np.testing.assert_array_equal(whole, jnp.concatenate(parts))


@pytest.mark.parametrize("noise", sorted(NOISES))
def test_noise_rows_match_the_oracle_and_their_distribution(noise):
    rows = jax.jit(NOISES[noise].rows, static_argnums=(2, 3, 4))
    got = np.asarray(rows(KEY, 7, 50, 31, jnp.float32), np.float64)
    want = stream_noise(noise, KEY_DATA, 7, 50, 31)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)  # XLA's float32 erfinv
    draws = np.asarray(rows(KEY, 0, 400, 500, jnp.float32), np.float64).ravel()
    reference = {"gaussian": "norm", "laplace": "laplace", "uniform": "uniform"}[noise]
    args = (-1, 2) if noise == "uniform" else ()
    assert scipy.stats.kstest(draws, reference, args=args).pvalue > 1e-3
    # neighbouring values, and the two words of one counter (values c and c + 250), are
    # uncorrelated
    rows = draws.reshape(400, 500)
    for a, b in ((rows[:, :-1], rows[:, 1:]), (rows[:, :250], rows[:, 250:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)


def test_float64_rows_are_jax_random_rows():
    with jax.enable_x64(True):
        for noise in NOISES.values():
            want = noise.sample(KEY, (20, 9), jnp.float64)[7:12]
            rows = jax.jit(noise.rows, static_argnums=(2, 3, 4))(KEY, 7, 5, 9, jnp.float64)
            np.testing.assert_array_equal(rows, want)


def test_keys_of_another_implementation_are_refused():
    x = jnp.zeros((1, 2))
    with pytest.raises(TypeError, match="threefry"):
        jc.smoothing.sample_counts(lambda p, v: v, None, x, jax.random.key(0, impl="rbg"),
                                   sigma=0.5, num=4, num_classes=2)  # fmt: skip
