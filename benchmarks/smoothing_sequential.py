"""Samples per certificate: CERTIFY with fixed n against `certify(target_radius=r)`, one run.

    python benchmarks/smoothing_sequential.py            # the digits test split, n = 100,000

A digits MLP (64-256-256-10) is trained with Gaussian augmentation (sigma 0.25); every test
image is certified once with fixed n (the certified accuracy at each target radius is read from
that one run) and once per target radius with sequential sampling, all at alpha 0.001 and the
same keys. The JSON gives, per target radius, both certified accuracies, the mean samples per
image (n0 included) and their ratio, and the wall-clock seconds of each run; `compile_s` is
the first call on two images, measured apart.
"""

import argparse
import json
import time

import jax
import numpy as np
from _common import machine

import jaxcert as jc

SIGMA, ALPHA, N0 = 0.25, 0.001, 100


def timed(fn):
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--n", type=int, default=100_000, help="estimation samples (most)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs")
    parser.add_argument("--radii", default="0.25,0.5", help="target radii, comma-separated")
    args = parser.parse_args()
    radii = [float(r) for r in args.radii.split(",")]

    train_x, train_y = jc.data.load_digits("train")
    test_x, test_y = jc.data.load_digits("test")
    test_x, test_y = test_x[: args.images], test_y[: args.images]
    spec = {"kind": "mlp", "hidden": [256, 256], "num_classes": 10}
    apply_fn, params = jc.models.init_model(spec, jax.random.key(0), train_x.shape[1:])
    params, train_s = timed(
        lambda: jc.train.fit(
            apply_fn, params, train_x, train_y, jax.random.key(1), epochs=args.epochs, sigma=SIGMA
        )
    )
    common = dict(sigma=SIGMA, num_classes=10, n0=N0, n=args.n, alpha=ALPHA)
    key = jax.random.key(2)

    def certify(x, **kw):
        return jc.smoothing.certify(apply_fn, params, x, key, **common, **kw)

    _, compile_s = timed(lambda: certify(test_x[:2], target_radius=radii[0]))
    fixed, fixed_s = timed(lambda: certify(test_x))
    report = {
        "benchmark": "smoothing_sequential",
        "machine": machine(),
        "model": "digits MLP 64-256-256-10, Gaussian augmentation",
        "sigma": SIGMA,
        "alpha": ALPHA,
        "n0": N0,
        "n": args.n,
        "images": len(test_x),
        "train_s": train_s,
        "compile_s": compile_s,
        "fixed": {
            "seconds": fixed_s,
            "mean_samples": float(np.mean(fixed.num_samples)),
            "clean_accuracy_of_smoothed": float(np.mean(fixed.prediction == test_y)),
        },
        "targets": {},
    }
    for r in radii:
        sequential, seconds = timed(lambda r=r: certify(test_x, target_radius=r))
        fixed_acc = float(np.mean((fixed.prediction == test_y) & (fixed.radius >= r)))
        seq_acc = float(np.mean((sequential.prediction == test_y) & (sequential.radius >= r)))
        report["targets"][str(r)] = {
            "certified_accuracy_fixed": fixed_acc,
            "certified_accuracy_sequential": seq_acc,
            "accuracy_difference_points": 100 * (seq_acc - fixed_acc),
            "mean_samples_sequential": float(np.mean(sequential.num_samples)),
            "samples_ratio_fixed_over_sequential": float(
                np.mean(fixed.num_samples) / np.mean(sequential.num_samples)
            ),
            "max_samples_sequential": int(np.max(sequential.num_samples)),
            "seconds_sequential": seconds,
            "wall_clock_ratio_fixed_over_sequential": fixed_s / seconds,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
