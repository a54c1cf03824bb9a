"""A NumPy Threefry2x32-20 and the noise stream of `jaxcert.smoothing` built on it: an oracle
written from the Random123 specification (Salmon et al., SC 2011), not from JAX's code."""

import numpy as np
import scipy.special

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(key, high, low):
    """The two output words of Threefry2x32 with 20 rounds, key (k0, k1), counter words
    (high, low) (uint32 arrays of one shape)."""
    k = [np.uint32(key[0]), np.uint32(key[1])]
    k.append(k[0] ^ k[1] ^ _PARITY)
    x0, x1 = np.asarray(high, np.uint32) + k[0], np.asarray(low, np.uint32) + k[1]
    with np.errstate(over="ignore"):
        for group in range(5):
            for r in range(4):
                rotation = _ROTATIONS[(group % 2) * 4 + r]
                x0 = x0 + x1
                x1 = ((x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))) ^ x0
            x0 = x0 + k[(group + 1) % 3]
            x1 = x1 + k[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def stream_words(key, first, count, size):
    """Rows [first, first + count) of 32-bit words of the stream (`jaxcert.smoothing._stream`)."""
    pairs = (size + 1) // 2
    counters = (np.uint64(first) + np.arange(count, dtype=np.uint64))[:, None] * np.uint64(
        pairs
    ) + np.arange(pairs, dtype=np.uint64)
    high = (counters >> np.uint64(32)).astype(np.uint32)
    low = (counters & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    b1, b2 = threefry2x32(key, high, low)
    return np.concatenate([b1, b2], axis=-1)[:, :size]


def stream_uniform(key, first, count, size, minval, maxval):
    """float32 uniform rows: 23 mantissa bits under an exponent of 1, minus 1, scaled."""
    words = stream_words(key, first, count, size)
    one = (words >> np.uint32(9)) | np.float32(1.0).view(np.uint32)
    floats = one.view(np.float32) - np.float32(1.0)
    low, high = np.float32(minval), np.float32(maxval)
    return np.maximum(low, floats * (high - low) + low)


def stream_noise(noise, key, first, count, size):
    """float64 values of the float32 noise rows (Gaussian, Laplace or uniform) of the stream."""
    if noise == "gaussian":
        u = stream_uniform(key, first, count, size, np.nextafter(np.float32(-1), np.float32(0)), 1)
        return np.sqrt(2) * scipy.special.erfinv(u.astype(np.float64))
    if noise == "laplace":
        u = stream_uniform(key, first, count, size, -1 + np.finfo(np.float32).epsneg, 1)
        u = u.astype(np.float64)
        return np.sign(u) * np.log1p(-np.abs(u))
    return stream_uniform(key, first, count, size, -1, 1).astype(np.float64)
