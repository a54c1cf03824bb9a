"""Monte Carlo class counts of a base classifier under noise, fused and chunked in one jit."""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.errors import FlaxError
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike, DTypeLike

from .. import _validate
from .._sharding import check_same_on_all_processes, device_count, mesh
from ._affine_prefix import split
from ._noise import get_noise
from ._stream import check_threefry


def _typed(key):
    """A new-style typed threefry key (or batch of keys) from a typed or legacy uint32 key."""
    key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.ndim == 0 or key.shape[-1] != 2:
            raise TypeError("key must be a jax.random key (or a batch of keys, one per image)")
        key = jax.random.wrap_key_data(key, impl="threefry2x32")
    check_threefry(key)
    return key


def image_keys(key, batch):
    """One key per image: `fold_in(key, i)` for a single key, or the given batch of keys.

    Accepts new-style typed keys and legacy uint32 keys. A batch of keys lets a caller tie each
    image's randomness to its index in a data set, so results do not depend on batching.
    """
    key = _typed(key)
    if key.ndim == 0:
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))
    if key.shape != (batch,):
        raise ValueError(
            f"key must be a single key or a batch of {batch} keys (one per image), "
            f"got shape {key.shape}"
        )
    return key


def shared_key(key):
    """The one key of `shared_noise=True`: every image's sample j is row j of its draw."""
    key = _typed(key)
    if key.ndim != 0:
        raise ValueError(
            f"shared_noise=True draws one noise for every image: key must be a single key, got "
            f"a batch of shape {key.shape}"
        )
    return key


def check_classifier(apply_fn, params, x, num_classes):
    """Validate the image batch and that apply_fn maps it to (batch, num_classes) logits."""
    if not hasattr(x, "shape") or x.ndim < 2:
        raise ValueError(
            "x must be a batch of inputs with a leading batch axis, shape (B, ...), "
            f"got shape {getattr(x, 'shape', None)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one input, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    _validate.check_finite("x", x)
    num_classes = _validate.check_count("num_classes", num_classes, minimum=2)
    one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        out = jax.eval_shape(apply_fn, params, one)
    except (TypeError, ValueError, FlaxError) as err:  # e.g. Flax's ScopeParamShapeError
        raise ValueError(
            f"apply_fn cannot take inputs shaped like x, (N, {', '.join(map(str, x.shape[1:]))})"
            f": {str(err).splitlines()[0]}"
        ) from err
    if getattr(out, "shape", None) != (1, num_classes):
        raise ValueError(
            f"apply_fn must map a batch of shape (N, {', '.join(map(str, x.shape[1:]))}) to "
            f"logits of shape (N, num_classes={num_classes}), got {getattr(out, 'shape', out)}"
        )
    return num_classes


def default_batch_size():
    """Noisy inputs per forward pass when none is given: cache-sized on CPU, large elsewhere."""
    return 1024 if jax.default_backend() == "cpu" else 16384


def chunk_size(batch_size, num_images, num):
    """Samples per image in one forward pass of at most `batch_size` inputs: as many as fit,
    but no more than `num` rounded up to a power of two (so that nearby sample counts share
    one compilation)."""
    batch_size = default_batch_size() if batch_size is None else batch_size
    batch_size = _validate.check_count("batch_size", batch_size)
    if batch_size < num_images:
        raise ValueError(
            f"batch_size ({batch_size}) must be at least the number of images ({num_images}): "
            "one forward pass holds at least one noisy copy of every image"
        )
    return min(batch_size // num_images, 1 << (num - 1).bit_length())


def sample_counts(
    apply_fn: Callable,
    params: Any,
    x: ArrayLike,
    key: jax.Array,
    *,
    sigma: float,
    num: int,
    num_classes: int,
    batch_size: int | None = None,
    noise: str = "gaussian",
    compute_dtype: DTypeLike | None = None,
    start: int = 0,
    shared_noise: bool = False,
) -> jax.Array:
    """Count the base classifier's predictions on `num` noisy copies of each image.

    Noise generation and classifier evaluation are fused in one jitted function, vmapped over the
    images and chunked over samples with `lax.fori_loop`, so memory is flat in `num`. Sample j of
    image i is row j of key_i's noise stream (`jaxcert.smoothing._stream`: threefry2x32 words
    at counters set by j and the value's position, turned into Gaussian, Laplace or uniform
    noise as `jax.random` turns its bits), so counts do not depend on how images are batched
    or on `batch_size`. With several devices
    (`jax.device_count() > 1`) each device draws and evaluates a contiguous share of the sample
    indices and the counts are summed: the same counts as on one device. With several
    processes (`jax.distributed.initialize`) the devices of all of them share the samples;
    every process must then pass the same arguments (checked: a ValueError otherwise) and gets
    all the counts.

    Args:
      apply_fn: the base classifier, `apply_fn(params, x) -> logits` on a batch.
      params: its parameters (a pytree argument, so new weights do not recompile).
      x: images, shape (B, ...), floating point.
      key: a jax.random key, or a batch of B keys (one per image); threefry2x32 (the default
        implementation).
      sigma: noise scale (> 0): the Gaussian's standard deviation.
      num: number of noisy samples per image (>= 1).
      num_classes: number of classes (>= 2), the width of the logits.
      batch_size: most noisy inputs in one forward pass, over all B images (>= B); None picks
        1024 on CPU (cache-sized chunks are fastest there) and 16384 on accelerators.
      noise: "gaussian" (l2), "laplace" or "uniform" (l1).
      compute_dtype: if given (e.g. `jnp.bfloat16` on accelerators), the floating parameters
        and each noisy input (drawn in x's dtype) are cast to it before `apply_fn`. The counts,
        and so any certificate, are then of that lower-precision classifier: it is the base
        classifier that gets certified.
      start: the index of the first sample (>= 0): counts over samples [start, start + num),
        so that samples can be drawn in rounds, each new round continuing where the last
        stopped.
      shared_noise: draw each noise sample once for all B images (sample j of every image is
        row j of the draw from `key`, which must be a single key): the noise costs 1/B as much.
        Each image's counts are still those of independent samples, so each certificate keeps
        its guarantee, but certificates of different images are then correlated (a statement
        about all of them at once, such as a certified accuracy, is no longer a sum of
        independent events). Where the classifier traces (`jaxcert.graph.trace`) and a dense
        layer or convolution comes before its first activation, that affine part A runs once
        per image and its linear part once per noise row, A(x_i) + L(sigma eps_j) (without
        `compute_dtype`; `jaxcert.smoothing._affine_prefix`): equal to A(x_i + sigma eps_j)
        in exact arithmetic, rounded differently in floating point, so the counts are those
        of the classifier evaluated this way (a sample within rounding of a tie may go
        either way).

    Returns:
      int32 counts of shape (B, num_classes).

    References:
      Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
      ICML 2019 (SAMPLEUNDERNOISE).
    """
    num_classes = check_classifier(apply_fn, params, x, num_classes)
    _validate.check_positive("sigma", sigma)
    num = _validate.check_count("num", num)
    start = _validate.check_count("start", start, minimum=0)
    if start + num > 2**31 - 1:
        raise ValueError(f"start + num must be below 2^31, got {start} + {num}")
    per_image = chunk_size(batch_size, x.shape[0], num)
    get_noise(noise)
    keys = shared_key(key) if shared_noise else image_keys(key, x.shape[0])
    if compute_dtype is not None:
        if not jnp.issubdtype(compute_dtype, jnp.floating):
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype!r}")
        params = jax.tree.map(lambda p: _cast(p, compute_dtype), params)
    shards = device_count() if num >= device_count() else 1  # samples split over devices
    if shards > 1:  # the copies of every process feed one computation: they must agree
        settings = repr((num_classes, per_image, noise, shards, compute_dtype))
        check_same_on_all_processes(
            "sample_counts' arguments", (params, x, keys, sigma, start, num, settings)
        )
    return _sample_counts(
        apply_fn,
        params,
        x,
        keys,
        jnp.asarray(sigma, x.dtype),
        jnp.asarray(start, jnp.int32),
        jnp.asarray(num, jnp.int32),
        num_classes=num_classes,
        per_image=per_image,
        noise=noise,
        shards=shards,
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype),
    )


def _cast(value, dtype):
    value = jnp.asarray(value)
    return value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value


def noisy_inputs(x, keys, sigma, first, count, noise="gaussian"):
    """Samples [first, first + count) of every image, as one batch of shape (B * count, ...).

    Sample j of image i is `x_i + sigma * eps_j`, where eps_j is row j of the noise stream of
    `keys[i]` (`_stream`; rows of the values of one image), or of `keys` for every image when
    it is a single key (shared noise).
    """
    def copies(key):
        return noise_rows(key, first, count, x, noise)

    eps = copies(keys)[None] if keys.ndim == 0 else jax.vmap(copies)(keys)
    flat = x.reshape(x.shape[0], 1, -1)
    return (flat + sigma * eps).reshape(-1, *x.shape[1:])


def noise_rows(key, first, count, x, noise):
    """Rows [first, first + count) of one key's noise stream for images shaped like x's, drawn
    flat (XLA vectorises a flat draw best): (count, size of one image), in x's dtype."""
    return get_noise(noise).rows(key, first, count, math.prod(x.shape[1:]), x.dtype)


def count_predictions(logits, num_classes, valid):
    """Per-image class counts of a (B * S, num_classes) logit batch; `valid` masks the S samples."""
    predictions = jnp.argmax(logits, axis=-1).reshape(-1, valid.shape[0])
    hits = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
    return jnp.sum(hits * valid[None, :, None], axis=1, dtype=jnp.int32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "apply_fn",
        "num_classes",
        "per_image",
        "noise",
        "shards",
        "compute_dtype",
    ),
)
def _sample_counts(
    apply_fn,
    params,
    x,
    keys,
    sigma,
    start,
    num,
    *,
    num_classes,
    per_image,
    noise,
    shards=1,
    compute_dtype=None,
):
    """Counts over samples [start, start + num); with shards > 1 each device takes a
    contiguous share of the sample indices (`shard_map` over a "samples" mesh axis) and the
    counts are summed, so they equal one device's exactly. `start` and `num` are traced:
    calls that differ only in them share one compilation."""

    def counts_of(params, x, keys, sigma, start, num, first):
        share = (num + shards - 1) // shards  # offsets [first, first + share) below num
        # shared noise: the first affine layers once per image and once per noise row
        cut = split(apply_fn, params, x) if keys.ndim == 0 and compute_dtype is None else None
        images = None if cut is None else cut.images(x)

        def chunk(i, counts):
            offsets = first + i * per_image + jnp.arange(per_image)
            valid = (offsets < num) & (offsets < first + share)
            if cut is None:
                inputs = noisy_inputs(x, keys, sigma, start + offsets[0], per_image, noise)
                logits = apply_fn(
                    params, inputs if compute_dtype is None else inputs.astype(compute_dtype)
                )
            else:
                rows = noise_rows(keys, start + offsets[0], per_image, x, noise)
                logits = cut.logits(images, cut.rows(sigma * rows.reshape(-1, *x.shape[1:])))
            return counts + count_predictions(logits, num_classes, valid)

        counts = jnp.zeros((x.shape[0], num_classes), jnp.int32)
        return lax.fori_loop(0, (share + per_image - 1) // per_image, chunk, counts)

    if shards == 1:
        return counts_of(params, x, keys, sigma, start, num, 0)

    def per_device(params, x, keys, sigma, start, num):
        first = lax.axis_index("samples") * ((num + shards - 1) // shards)
        return lax.psum(counts_of(params, x, keys, sigma, start, num, first), "samples")

    replicated = (P(),) * 6
    sharded = jax.shard_map(
        per_device, mesh=mesh("samples"), in_specs=replicated, out_specs=P(), check_vma=False
    )
    return sharded(params, x, keys, sigma, start, num)
