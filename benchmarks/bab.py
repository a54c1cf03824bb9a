"""Branch and bound against the MILP, in one run, on networks built without downloads. Prints JSON.

Networks and questions (each decided by `jaxcert.exact` with strategy "bab" and with "milp"):
* mnist_random: an MLP 784-256-256-10 with random weights on random inputs in [0, 1], l_inf
  robustness of its own class at eps 0.006 and 0.008 (where the MILP times out at 30 s);
* digits and digits_pgd: the digits MLPs of benchmarks/exact.py (64-32-32-10 trained normally,
  64-64-32-32-10 trained with PGD), robustness at eps 0.02 and 0.1, on the first test images
  that CROWN does not certify (and the attack of `verify` does not falsify);
* acas_like: an MLP 5-50x6-5 (ACAS Xu's shape) trained to imitate a smooth function of 5 inputs,
  and VNN-LIB-style output properties over large input boxes: "y_k never exceeds the largest
  value seen at 20,000 sampled points by 5% of its range" (most hold), "y_k never reaches the
  90% quantile of those samples" (false) and "y_k is never the smallest output" where the
  samples never saw it smallest.

For each network and strategy: decided count, median and max seconds per question, and
branch and bound's domains per second; per question, the unstable neurons under CROWN (what
"auto" reads) and both strategies' answers and seconds. Compile time is included in every
figure (each network's first question compiles its bucket sizes), as a user meets it. Each
strategy runs through all of a network's questions before the other: a MILP that times out has
its solver processes replaced, and their start-up (seconds of CPU) would otherwise be timed
against the next question's branch and bound.

    python benchmarks/bab.py [--networks mnist_random,digits,digits_pgd,acas_like]
        [--images 4] [--time-limit 60] [--milp-time-limit 30] [--strategies bab,milp]
        [--branching fsb]
"""

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine
from exact import networks as digits_networks

import jaxcert as jc

NETWORKS = ("mnist_random", "digits", "digits_pgd", "acas_like")
STRATEGIES = ("bab", "milp")
ACAS_WIDTH, ACAS_DEPTH = 50, 6
FREQUENCY = 0.5  # of the imitated function's sines, per input


def robustness_questions(name, images):
    """(apply_fn, params, [(label, x (1, ...), y, eps)]) of a classifier network."""
    if name == "mnist_random":
        apply_fn, params = jc.models.init_model(
            {"kind": "mlp", "hidden": [256, 256]}, jax.random.key(2), (784,)
        )
        x = np.asarray(jax.random.uniform(jax.random.key(3), (images, 784)))
        y = np.asarray(jnp.argmax(apply_fn(params, x), axis=1))
        return apply_fn, params, [
            (f"img{i}_eps{eps}", x[i : i + 1], y[i], eps)
            for eps in (0.006, 0.008) for i in range(images)
        ]  # fmt: skip
    eps = {"digits": 0.02, "digits_pgd": 0.1}[name]
    (_, _, apply_fn, params, _), = digits_networks(1, [name])  # fmt: skip
    test_x, _ = jc.data.load_digits("test")
    x = test_x[:200]
    y = np.asarray(jnp.argmax(apply_fn(params, x), axis=1))
    net = jc.trace(apply_fn, params, x[:1])
    proved = np.all(np.asarray(jc.bounds.margins(net, jc.LinfBall(x, eps), y)) > 0, axis=1)
    picked = np.flatnonzero(~proved)[:images]
    return apply_fn, params, [(f"test{i}_eps{eps}", x[i : i + 1], y[i], eps) for i in picked]


def acas_like(properties):
    """(apply_fn, params, [(label, Property, unstable)]) of the ACAS-like network."""
    rng = np.random.default_rng(0)
    freq = rng.normal(size=(5, 5)) * FREQUENCY
    phase = rng.uniform(0, np.pi, 5)
    quadratic = rng.normal(size=(5, 5)) * 0.5

    def target(x):  # five smooth scores of five inputs in [-1, 1]
        return np.sin(x @ freq + phase) + 0.3 * (x**2) @ quadratic
    sizes = [5, *[ACAS_WIDTH] * ACAS_DEPTH, 5]
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = [
        (jax.random.normal(k, (a, b)) * np.sqrt(2 / a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes, sizes[1:])
    ]

    def apply_fn(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    train_x = rng.uniform(-1, 1, (20000, 5)).astype(np.float32)
    train_y = target(train_x).astype(np.float32)
    optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, 3000))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((apply_fn(p, xb) - yb) ** 2))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(3000):
        idx = rng.integers(0, len(train_x), 256)
        params, state, loss = step(params, state, train_x[idx], train_y[idx])
    questions = []
    for p in range(properties):
        center = rng.uniform(-0.6, 0.6, 5)
        half = rng.uniform(0.15, 0.4, 5)
        lower, upper = center - half, center + half
        samples = rng.uniform(lower, upper, (20000, 5)).astype(np.float32)
        out = np.asarray(apply_fn(params, samples), np.float64)
        k = p % 5
        span = out[:, k].max() - out[:, k].min()
        kind = ("above_max", "above_max", "quantile", "minimal")[p % 4]
        if kind == "above_max":  # y_k >= max + 5% of the range: unreachable unless bounds fail
            C, d = -np.eye(5)[k : k + 1], np.array([-(out[:, k].max() + 0.05 * span)])
        elif kind == "quantile":  # y_k >= its 90% quantile: reachable
            C, d = -np.eye(5)[k : k + 1], np.array([-np.quantile(out[:, k], 0.9)])
        else:  # y_k <= y_j for every j: y_k is the smallest output
            C = np.stack([np.eye(5)[k] - np.eye(5)[j] for j in range(5) if j != k])
            d = np.zeros(4)
            if (out[:, k] <= out.min(axis=1)).any():
                continue  # seen smallest: a trivial sat
        prop = jc.Property([jc.Case(lower, upper, [(C, d)])])
        questions.append((f"p{p}_{kind}_y{k}", prop, lower, upper))
    return apply_fn, params, float(loss), questions


def unstable_count(net, spec):
    bounds = jc.bounds.intermediate_bounds(net, spec)
    return int(sum(np.sum((np.asarray(b.lower) < 0) & (np.asarray(b.upper) > 0)) for b in bounds))


def decided(status):
    return status in ("verified", "falsified", "sat", "unsat")


def summary(rows, strategy):
    seconds = [r[strategy]["seconds"] for r in rows]
    out = {
        "decided": sum(decided(r[strategy]["status"]) for r in rows),
        "of": len(rows),
        "median_s": round(statistics.median(seconds), 3) if seconds else None,
        "max_s": round(max(seconds), 3) if seconds else None,
    }
    if strategy == "bab":
        domains = sum(r["bab"]["domains"] for r in rows)
        spent = sum(r["bab"]["seconds"] for r in rows if r["bab"]["domains"])
        out["domains"] = domains
        out["domains_per_s"] = round(domains / spent, 1) if spent else None
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated")
    parser.add_argument("--images", type=int, default=4, help="per network and eps")
    parser.add_argument("--properties", type=int, default=12, help="ACAS-like properties")
    parser.add_argument("--time-limit", type=float, default=60.0, help="branch and bound, s")
    parser.add_argument("--milp-time-limit", type=float, default=30.0)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    parser.add_argument("--branching", default="fsb", help="of branch and bound: fsb or babsr")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    limits = {"bab": args.time_limit, "milp": args.milp_time_limit}
    results = {}
    for name in args.networks.split(","):
        rows = []
        if name == "acas_like":
            began = time.perf_counter()
            apply_fn, params, loss, questions = acas_like(args.properties)
            net = jc.trace(apply_fn, params, np.zeros((1, 5), np.float32))
            info = {"train_mse": loss, "train_s": round(time.perf_counter() - began, 1)}
            for label, _, lower, upper in questions:
                box = jc.Box(lower[None].astype(np.float32), upper[None].astype(np.float32))
                rows.append({"question": label, "unstable": unstable_count(net, box)})
            for strategy in strategies:
                for row, (_, prop, _, _) in zip(rows, questions):
                    r = jc.exact.verify_property(net, prop, strategy=strategy,
                                                 time_limit=limits[strategy],
                                                 branching=args.branching)  # fmt: skip
                    row[strategy] = {"status": r.result, "seconds": round(r.seconds, 3),
                                     "domains": r.domains}  # fmt: skip
        else:
            apply_fn, params, questions = robustness_questions(name, args.images)
            net = jc.trace(apply_fn, params, questions[0][1])
            info = {}
            for label, x, _, eps in questions:
                spec = jc.LinfBall(x, eps)
                rows.append({"question": label, "unstable": unstable_count(net, spec)})
            for strategy in strategies:
                for row, (_, x, y, eps) in zip(rows, questions):
                    (r,) = jc.exact.verify(net, jc.LinfBall(x, eps), np.array([y]),
                                           strategy=strategy, time_limit=limits[strategy],
                                           branching=args.branching)  # fmt: skip
                    row[strategy] = {"status": r.status, "seconds": round(r.seconds, 3),
                                     "domains": r.domains}  # fmt: skip
        results[name] = {**info, **{s: summary(rows, s) for s in strategies}, "questions": rows}
        print(json.dumps({name: {s: results[name][s] for s in strategies}}), flush=True,
              file=sys.stderr)  # fmt: skip
    print(json.dumps({"benchmark": "bab", "machine": machine(), "time_limit_s": limits,
                      "branching": args.branching, "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
