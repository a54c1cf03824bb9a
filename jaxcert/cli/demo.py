"""`jaxcert demo`: train on digits at three noise levels and certify by randomized smoothing."""

import json
import math
import sys

import numpy as np

from .. import data, report, results, smoothing
from .. import train as training
from ._options import (
    NOISE_HELP,
    NOISE_METAVAR,
    RADII,
    Help,
    check_noise,
    floats,
    level,
    positive,
    require,
)

SIGMAS = (0.12, 0.25, 0.5)


def add_parser(subparsers):
    demo = subparsers.add_parser(
        "demo",
        formatter_class=Help,
        help="train on digits and certify by "
        "randomized smoothing at three noise levels; print the table",
    )
    demo.add_argument("--sigmas", type=floats, default=SIGMAS, help="noise levels")
    demo.add_argument("--noise", default="gaussian", metavar=NOISE_METAVAR, help=NOISE_HELP)
    demo.add_argument("--n", type=int, default=10_000, help="estimation samples per image")
    demo.add_argument("--n0", type=int, default=100, help="selection samples per image")
    demo.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    demo.add_argument("--epochs", type=int, default=40, help="training epochs per model")
    demo.add_argument("--max", type=int, default=None, help="certify only the first MAX images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--json", action="store_true", help="print the table as JSON")
    demo.set_defaults(run=run)


def _check(args):
    positive("n", args.n)
    positive("n0", args.n0)
    positive("epochs", args.epochs)
    level("alpha", args.alpha)
    check_noise(args.noise)
    if args.max is not None:
        positive("max", args.max)
    sigmas = ",".join(map(str, args.sigmas))
    require(args.sigmas and all(math.isfinite(s) and s > 0 for s in args.sigmas), "sigmas",
            "finite and > 0", sigmas)  # fmt: skip


def run(args):
    _check(args)
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    indices = np.arange(len(test_x))[: args.max]
    spec = {"kind": "mlp", "hidden": [256, 256], "num_classes": data.num_classes}
    print(
        f"jaxcert demo: digits ({len(train_x)} train / {len(indices)} test images), MLP "
        f"64-256-256-10, n0={args.n0}, n={args.n}, alpha={args.alpha}"
        + ("" if args.noise == "gaussian" else f", {args.noise} noise"),
        file=sys.stderr,
    )
    found, base_acc = {}, {}
    for sigma in args.sigmas:
        apply_fn, params = training.train_model(train_x, train_y, spec=spec, sigma=sigma,
                                                noise=args.noise, epochs=args.epochs,
                                                seed=args.seed,
                                                label=f"train  sigma={sigma}")  # fmt: skip
        base_acc[sigma] = training.accuracy(apply_fn, params, test_x[indices], test_y[indices])
        rows = results.certify_rows(apply_fn, params, test_x, test_y, indices, sigma=sigma,
                                    n0=args.n0, n=args.n, alpha=args.alpha, batch_size=None,
                                    seed=args.seed, noise=args.noise, images_per_step=24,
                                    label=f"certify sigma={sigma}")  # fmt: skip
        found[sigma] = results.radius_and_correct(rows)
    if args.json:
        table = {
            str(sigma): {
                "base_accuracy": base_acc[sigma],
                "certified_accuracy": dict(
                    zip(map(str, RADII), smoothing.certified_accuracy(*r, RADII).tolist())
                ),
            }
            for sigma, r in found.items()
        }
        print(json.dumps(table))
    else:
        print(report.smoothing_table(found, RADII, args.n, args.alpha, base_acc, args.noise))
