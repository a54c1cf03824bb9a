"""Noisy evaluations per second of `jaxcert.smoothing.sample_counts`, against two references.

For a 784-256-256-10 ReLU MLP and a small CNN on 28x28 inputs it measures, in one run:
  * fused: `sample_counts` on a batch of images (noise, model and counting in one jit);
  * fused_shared_noise: the same with `shared_noise=True` (one noise draw for all images, and
    the first layer once per image and once per noise row); `shared_noise_counts_moved` counts
    the samples it classifies otherwise than the direct evaluation of the same noise;
  * baseline: a plain per-image loop as in Cohen et al.'s reference code: for each image and each
    batch of 1000 samples, draw the noise, add it outside the model call, run the jitted model,
    and count the predictions on the host;
  * numpy loop (the MLP only): the same per-image loop with no JAX at all: NumPy's default
    generator (PCG64) draws the normals and a NumPy forward pass (BLAS matmuls) classifies;
  * noise alone: generating the same noisy inputs with no model;
  * model alone: the same model and counting on noise-free inputs.
The roofline is the slower of the last two; `roofline_fraction` = fused rate / roofline rate.
`serial_bound_fraction` compares the fused rate with 1 / (1/noise + 1/model), the best a loop can
do when noise generation and the model each keep every core busy.
Compile time (first call minus a steady call) is reported apart. Prints JSON.

    python benchmarks/smoothing_throughput.py [--images 16] [--num 8192] [--repeats 5]
        [--models mlp_784_256_256_10,cnn_16_32_100]
"""

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine, median_ratio, time_rounds
from jax import lax

import jaxcert as jc
from jaxcert.smoothing._sampling import chunk_size, count_predictions, noisy_inputs

SIGMA = 0.25
NUM_CLASSES = 10
MODELS = {
    "mlp_784_256_256_10": {"kind": "mlp", "hidden": [256, 256], "num_classes": NUM_CLASSES},
    "cnn_16_32_100": {
        "kind": "cnn",
        "channels": [16, 32],
        "dense": 100,
        "num_classes": NUM_CLASSES,
    },
}
INPUT_SHAPE = (28, 28, 1)


def fused(apply_fn, params, x, key, num, batch_size, shared_noise=False):
    return lambda: jc.smoothing.sample_counts(
        apply_fn,
        params,
        x,
        key,
        sigma=SIGMA,
        num=num,
        num_classes=NUM_CLASSES,
        batch_size=batch_size,
        shared_noise=shared_noise,
    )


def numpy_mlp(params):
    """The MLP's forward pass in NumPy, on flat inputs."""
    layers = [
        (np.asarray(layer["kernel"]), np.asarray(layer["bias"]))
        for _, layer in sorted(params["params"].items(), key=lambda item: int(item[0][6:]))
    ]

    def forward(h):
        for i, (kernel, bias) in enumerate(layers):
            h = h @ kernel + bias
            h = np.maximum(h, 0) if i < len(layers) - 1 else h
        return h

    return forward


def numpy_loop(forward, x, num, batch=1000):
    """Cohen et al.'s loop in plain NumPy: PCG64 normals and a NumPy forward pass."""
    images = np.asarray(x).reshape(x.shape[0], -1)
    rng = np.random.default_rng(0)

    def run():
        all_counts = []
        for image in images:
            counts = np.zeros(NUM_CLASSES, np.int64)
            for start in range(0, num, batch):
                noise = rng.standard_normal((min(batch, num - start), image.size), np.float32)
                predictions = np.argmax(forward(image + SIGMA * noise), axis=1)
                counts += np.bincount(predictions, minlength=NUM_CLASSES)
            all_counts.append(counts)
        return np.stack(all_counts)

    return run


def per_image_baseline(apply_fn, params, x, key, num, batch=1000):
    """Cohen et al.'s loop: one image at a time, noise added outside the model call."""
    model = jax.jit(apply_fn)

    def run():
        all_counts = []
        for i in range(x.shape[0]):
            counts = np.zeros(NUM_CLASSES, np.int64)
            image_key = jax.random.fold_in(key, i)
            for start in range(0, num, batch):
                size = min(batch, num - start)
                noise = (
                    jax.random.normal(jax.random.fold_in(image_key, start), (size, *x.shape[1:]))
                    * SIGMA
                )
                predictions = jnp.argmax(model(params, x[i] + noise), axis=-1)
                counts += np.bincount(np.asarray(predictions), minlength=NUM_CLASSES)
            all_counts.append(counts)
        return np.stack(all_counts)

    return run


def scanned(x, num, batch_size, body):
    """Run `body(start, indices)` over the same chunks as `sample_counts`, summing its result."""
    per_image = chunk_size(batch_size, x.shape[0], num)
    starts = np.arange(0, num, per_image)

    def step(total, start):
        return total + body(start, start + jnp.arange(per_image)), None

    return lambda init: lax.scan(step, init, starts)[0]


def noise_alone(x, key, num, batch_size):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(x.shape[0]))
    # Summing consumes every noisy input without a model (and fuses with the generation).
    def body(start, idx):
        return jnp.sum(noisy_inputs(x, keys, SIGMA, start, idx.size))

    loop = scanned(x, num, batch_size, body)
    return jax.jit(lambda: loop(jnp.float32(0)))


def model_alone(apply_fn, params, x, num, batch_size):
    per_image = chunk_size(batch_size, x.shape[0], num)
    clean = jnp.repeat(x, per_image, axis=0)

    def body(start, idx):
        # A per-chunk shift keeps XLA from hoisting the loop-invariant model call out of the scan
        # (a scale would not: XLA moves a scalar factor out of the matmul).
        inputs = clean + start.astype(x.dtype) * 1e-9
        return count_predictions(apply_fn(params, inputs), NUM_CLASSES, idx < num)

    loop = scanned(x, num, batch_size, body)
    return jax.jit(lambda: loop(jnp.zeros((x.shape[0], NUM_CLASSES), jnp.int32)))


def measure(name, spec, images, num, repeats, batch_size):
    apply_fn, params = jc.models.init_model(spec, jax.random.key(0), INPUT_SHAPE)
    x = jax.random.uniform(jax.random.key(1), (images, *INPUT_SHAPE))
    key = jax.random.key(2)
    evals = images * num
    result = {"images": images, "samples_per_image": num, "batch_size": batch_size}
    cases = {
        "fused": fused(apply_fn, params, x, key, num, batch_size),
        "fused_shared_noise": fused(apply_fn, params, x, key, num, batch_size, True),
        "noise_alone": noise_alone(x, key, num, batch_size),
        "model_alone": model_alone(apply_fn, params, x, num, batch_size),
        "per_image_baseline": per_image_baseline(apply_fn, params, x, key, num),
    }
    if spec["kind"] == "mlp":
        forward = numpy_mlp(params)
        flat = np.asarray(x).reshape(images, -1)
        np.testing.assert_allclose(forward(flat), apply_fn(params, x), rtol=1e-4, atol=1e-4)
        cases["numpy_loop"] = numpy_loop(forward, x, num)
    timed = time_rounds(cases, repeats)
    for case, (first, runs) in timed.items():
        steady = statistics.median(runs)
        result[case] = {
            "evals_per_s": evals / steady,
            "steady_s": steady,
            "compile_s": max(first - steady, 0.0),
        }
    # Shared noise runs the first layer on images and noise rows apart (A x + A' eps): the same
    # network in real arithmetic, rounded differently; count the samples that come out otherwise
    # (after the timing, which would otherwise find the cases compiled).
    same_rows = jnp.stack([key] * images)  # every image the key's own rows, evaluated directly
    direct = jc.smoothing.sample_counts(apply_fn, params, x, same_rows, sigma=SIGMA, num=num,
                                        num_classes=NUM_CLASSES, batch_size=batch_size)  # fmt: skip
    result["shared_noise_counts_moved"] = int(
        np.abs(np.asarray(cases["fused_shared_noise"]()) - np.asarray(direct)).sum() // 2
    )
    rate = {case: result[case]["evals_per_s"] for case in cases}
    runs = {case: timed[case][1] for case in cases}
    roofline = min(rate["noise_alone"], rate["model_alone"])
    result["roofline_evals_per_s"] = roofline
    result["roofline_fraction"] = rate["fused"] / roofline
    # When noise and model each saturate every core, the best a fused loop can do is their
    # serial sum; this says how close the fused loop comes to that.
    serial = 1.0 / (1.0 / rate["noise_alone"] + 1.0 / rate["model_alone"])
    result["serial_bound_evals_per_s"] = serial
    result["serial_bound_fraction"] = rate["fused"] / serial
    # speedups: the median over rounds of the ratio within each round (`time_rounds`)
    result["speedup_vs_per_image_baseline"] = median_ratio(runs["per_image_baseline"],
                                                           runs["fused"])  # fmt: skip
    result["shared_noise_speedup"] = median_ratio(runs["fused"], runs["fused_shared_noise"])
    if "numpy_loop" in rate:
        result["speedup_vs_numpy_loop"] = median_ratio(runs["numpy_loop"], runs["fused"])
        result["shared_noise_speedup_vs_numpy_loop"] = median_ratio(
            runs["numpy_loop"], runs["fused_shared_noise"]
        )
    return name, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per batch")
    parser.add_argument("--num", type=int, default=8192, help="noisy samples per image")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="noisy inputs per forward pass (default: the library's)",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    args = parser.parse_args()
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    batch_size = args.batch_size or jc.smoothing._sampling.default_batch_size()
    results = dict(
        measure(name, MODELS[name], args.images, args.num, args.repeats, batch_size)
        for name in args.models.split(",")
    )
    print(
        json.dumps(
            {
                "benchmark": "smoothing_throughput",
                "machine": machine(),
                "sigma": SIGMA,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
