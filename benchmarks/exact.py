"""Seconds per image of `jaxcert.exact.verify` against a naive MILP baseline. Prints JSON.

Networks: a digits MLP 64-32-32-10 trained normally, the same MLP trained with PGD and the
ReLU-stability and L1 terms of Xiao et al. (2019) at eps 0.05, the PGD-trained MLP
64-64-32-32-10 of examples/certified_training.py (hard MILPs at eps 0.1: many unstable ReLUs,
robust images; `--networks digits_pgd --eps 0.1`), and an MNIST-sized MLP
784-50-50-10 with random weights on random inputs in [0, 1]. For each eps in {0.01, 0.02, 0.05}:
the number of images verified / falsified / unknown and the median and max seconds per image, for
* jaxcert (each solver): CROWN margins and a PGD attack first, CROWN intermediate bounds, the
  LPs, then feasibility MILPs that stop at their first solution;
* naive (same run): interval bounds only, and a MILP minimising the margin to optimality for
  every target class.

    python benchmarks/exact.py [--images 20] [--time-limit 60] [--solvers scip,highs,race]
        [--networks digits,digits_relu_stability,mnist_sized] [--eps 0.01,0.02,0.05]
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np
from _common import machine
from ortools.math_opt.python import mathopt

import jaxcert as jc
from jaxcert.bounds import Interval
from jaxcert.exact._encoding import milp_model
from jaxcert.exact._verify import MARGIN, _solve

EPSILONS = (0.01, 0.02, 0.05)


def naive(net, spec, y, time_limit):
    """IBP intermediate bounds; a MILP per target, solved to optimality; no early answers."""
    relu_bounds = jc.bounds.intermediate_bounds(net, spec, method="ibp")
    statuses, seconds = [], []
    for b in range(spec.batch_size):
        began = time.perf_counter()
        example = jax.tree.map(lambda a, b=b: a[b], spec)
        bounds = [Interval(r.lower[b], r.upper[b]) for r in relu_bounds]
        model, _, outputs, _ = milp_model(net, example, bounds)
        status, label = "verified", int(y[b])
        for j in range(len(outputs)):
            if j == label:
                continue
            left = time_limit - (time.perf_counter() - began)
            result = _solve(model, outputs, label, j, "scip", max(left, 1e-3), None)
            if result.termination.reason != mathopt.TerminationReason.OPTIMAL:
                status = "unknown"
            elif result.objective_value() < -MARGIN:
                status = "falsified"
        statuses.append(status)
        seconds.append(time.perf_counter() - began)
    return statuses, seconds


def summary(statuses, seconds):
    return {
        "verified": statuses.count("verified"),
        "falsified": statuses.count("falsified"),
        "unknown": statuses.count("unknown") + statuses.count("unconfirmed"),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
    }


def networks(images, wanted):
    """(key, name, apply_fn, params, x) of the networks in `wanted`; the others are not trained."""
    train_x, train_y = jc.data.load_digits("train")
    test_x, test_y = jc.data.load_digits("test")
    apply_fn, initial = jc.models.init_model(
        {"kind": "mlp", "hidden": [32, 32]}, jax.random.key(0), train_x.shape[1:]
    )
    x = test_x[:images]
    if "digits" in wanted:
        params = jc.train.fit(apply_fn, initial, train_x, train_y, jax.random.key(1), epochs=30,
                              sigma=0.0)  # fmt: skip
        yield "digits", "digits_mlp_64_32_32_10", apply_fn, params, x
    if "digits_relu_stability" in wanted:
        params = _relu_stability(apply_fn, initial, train_x, train_y)
        name = "digits_mlp_64_32_32_10_pgd_relu_stability"
        yield "digits_relu_stability", name, apply_fn, params, x
    if "digits_pgd" in wanted:
        apply_fn, params = _pgd(train_x, train_y)
        yield "digits_pgd", "digits_mlp_64_64_32_32_10_pgd", apply_fn, params, x
    if "mnist_sized" in wanted:
        apply_fn, params = jc.models.init_model(
            {"kind": "mlp", "hidden": [50, 50]}, jax.random.key(2), (784,)
        )
        x = np.asarray(jax.random.uniform(jax.random.key(3), (images, 784)))
        yield "mnist_sized", "mnist_sized_mlp_784_50_50_10_random", apply_fn, params, x


def _relu_stability(apply_fn, initial, train_x, train_y):
    steps = 30 * -(-len(train_x) // 128)
    params = jc.train.fit(
        apply_fn,
        initial,
        train_x,
        train_y,
        jax.random.key(1),
        epochs=30,
        loss_fn=jc.train.training_loss("pgd", relu_stability_weight=0.01, l1_weight=1e-4),
        **jc.train.ramp_schedules("pgd", 0.05, steps),
    )
    return params


def _pgd(train_x, train_y):
    # The PGD model of examples/certified_training.py: MLP 64-64-32-32-10, eps ramped to 0.11.
    apply_fn, params = jc.models.init_model(
        {"kind": "mlp", "hidden": [64, 32, 32]}, jax.random.key(0), train_x.shape[1:]
    )
    params = jc.train.fit(
        apply_fn,
        params,
        train_x,
        train_y,
        jax.random.key(1),
        epochs=100,
        batch_size=64,
        loss_fn=jc.train.training_loss("pgd"),
        **jc.train.ramp_schedules("pgd", 1.1 * 0.1, 100 * -(-len(train_x) // 64)),
    )
    return apply_fn, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--solvers", default="scip,highs,race", help="comma-separated")
    parser.add_argument(
        "--networks", default="digits,digits_relu_stability,mnist_sized", help="comma-separated"
    )
    parser.add_argument("--eps", default=",".join(map(str, EPSILONS)), help="comma-separated")
    args = parser.parse_args()
    results = {}
    for _key, name, apply_fn, params, x in networks(args.images, args.networks.split(",")):
        net = jc.trace(apply_fn, params, x[:1])
        y = np.asarray(jax.numpy.argmax(apply_fn(params, x), axis=1))  # robustness of f's class
        # warm-up: compile for this batch shape
        jc.exact.verify(net, jc.LinfBall(x, 0.0), y, strategy="milp")
        rows = {}
        for eps in (float(e) for e in args.eps.split(",")):
            spec = jc.LinfBall(x, eps)
            row = {"naive": summary(*naive(net, spec, y, args.time_limit))}
            for solver in args.solvers.split(","):
                found = jc.exact.verify(net, spec, y, time_limit=args.time_limit, solver=solver,
                                        strategy="milp")
                ours = summary([r.status for r in found], [r.seconds for r in found])
                ours["mean_binaries"] = float(np.mean([r.binaries for r in found]))
                ours["median_speedup"] = row["naive"]["median_s"] / ours["median_s"]
                row[f"jaxcert_{solver}"] = ours
            rows[str(eps)] = row
        results[name] = rows
    print(
        json.dumps(
            {
                "benchmark": "exact",
                "machine": machine(),
                "images": args.images,
                "time_limit_s": args.time_limit,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
