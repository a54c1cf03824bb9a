"""Rows of a key's counter-based random stream, from any row on.

Threefry2x32 (Salmon et al., SC 2011) maps a key and a 64-bit counter k to two 32-bit words.
Row r of a stream of rows of `size` values calls it at the counters r * m, ..., r * m + m - 1
(m = ceil(size / 2)) and takes their first words, then their second words, one word per value
(the first `size`), truncated to the dtype's width; a 64-bit dtype takes both words of counter
r * size + c for value c (the first word high). Any range of
rows is then computed directly, for the price of those rows alone, whatever row it starts at:
smoothing draws each image's noise samples as rows of one stream, chunk by chunk, so counts do
not depend on chunking, and with no per-sample key. Using both words halves the threefry work
of `jax.random` (which xors them) for 32-bit dtypes; 64-bit rows equal `jax.random.bits(key,
(n, size), uint64)`. Words become floats as in `jax.random.uniform`: the top mantissa bits
under an exponent of 1, minus 1, scaled to [minval, maxval).

Threefry is written out here as straight-line array code (`threefry2x32`) rather than bound
through `jax.random`'s primitive, whose CPU lowering loops over its five groups of rounds and
writes both words to memory after each: XLA fuses the straight-line form into one pass, 2.7x
faster on CPU for the same bits.

References:
  J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel Random Numbers: As Easy as
  1, 2, 3", SC 2011.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}
# Recorded in run logs, so that a run is resumed only with the noise it started with (1: one
# key per sample, `fold_in(image_key, j)`, before 2026-12-07).
NOISE_STREAM_VERSION = 2


def check_threefry(key) -> None:
    """Raise TypeError unless `key` holds threefry2x32 keys (JAX's default implementation)."""
    name = str(jax.random.key_impl(key))
    if "threefry" not in name:
        raise TypeError(
            f"smoothing draws its noise from threefry2x32 keys (jax.random.key's default), got "
            f"keys of implementation {name!r}"
        )


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Salmon et al.'s, for Threefry-2x32
_PARITY = np.uint32(0x1BD11BDA)  # the key schedule's constant (Threefish's, 32-bit)


def threefry2x32(k0, k1, x0, x1):
    """The two output words of Threefry2x32 with 20 rounds (Salmon et al., section 3.2) for
    key words (k0, k1) and counter words (x0, x1): uint32 arrays that broadcast together.
    Equal, bit for bit, to JAX's `threefry2x32_p`."""
    keys = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for group in range(1, 6):  # five groups of four rounds, a key injection after each
        for rotation in _ROTATIONS[(group - 1) % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))
            x1 = x1 ^ x0
        x0 = x0 + keys[group % 3]
        x1 = x1 + keys[(group + 1) % 3] + np.uint32(group)
    return x0, x1


def flat_counters(first, count, size):
    """The 64-bit flat indices (first + r) * size + c of rows r < count, columns c < size, as
    (high, low) uint32 words (so they need no x64 mode)."""
    row = jnp.asarray(first).astype(jnp.uint32) + lax.broadcasted_iota(jnp.uint32, (count, 1), 0)
    column = lax.broadcasted_iota(jnp.uint32, (1, size), 1)
    # row * size in 64 bits, from 16-bit halves (schoolbook multiplication)
    r0, r1 = row & 0xFFFF, row >> 16
    s0, s1 = np.uint32(size & 0xFFFF), np.uint32(size >> 16)
    low_low, low_high, high_low = r0 * s0, r0 * s1, r1 * s0
    middle = (low_low >> 16) + (low_high & 0xFFFF) + (high_low & 0xFFFF)
    low = (low_low & 0xFFFF) | (middle << 16)
    high = r1 * s1 + (low_high >> 16) + (high_low >> 16) + (middle >> 16)
    total = low + column  # plus c, carrying into the high word
    return jnp.broadcast_to(high + (total < low).astype(jnp.uint32), total.shape), total


def stream_bits(key, first, count, size, bits):
    """Rows [first, first + count) of the key's stream (module docstring) of `size` values
    of `bits` bits each (8, 16, 32 or 64), as unsigned integers of that width."""
    k1, k2 = jax.random.key_data(key)
    if bits == 64:
        high, low = flat_counters(first, count, size)
        b1, b2 = threefry2x32(k1, k2, high, low)
        return (b1.astype(jnp.uint64) << 32) | b2.astype(jnp.uint64)
    pairs = (size + 1) // 2
    high, low = flat_counters(first, count, pairs)
    words = jnp.concatenate(threefry2x32(k1, k2, high, low), axis=-1)
    return words[:, :size].astype(_UINT[bits])


def uniform_rows(key, first, count, size, dtype, minval, maxval):
    """Rows [first, first + count) of the key's stream as floats uniform on [minval, maxval),
    converted from the words as `jax.random.uniform` converts its bits."""
    info = jnp.finfo(dtype)
    drawn = info.bits if info.nmant >= 8 else 8  # JAX draws 8 bits for bfloat16 and smaller
    bits = stream_bits(key, first, count, size, drawn).astype(_UINT[info.bits])
    unsigned = bits.dtype
    one = jnp.asarray(np.array(1.0, dtype).view(unsigned), unsigned)
    mantissa = lax.shift_right_logical(bits, jnp.asarray(drawn - info.nmant, unsigned)) | one
    floats = lax.bitcast_convert_type(mantissa, dtype) - jnp.asarray(1.0, dtype)
    minval, maxval = jnp.asarray(minval, dtype), jnp.asarray(maxval, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)
