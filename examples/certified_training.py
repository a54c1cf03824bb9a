"""Train five ways, then measure what each model's robustness is worth, by attack and by proof.

    python examples/certified_training.py                     # bundled 8x8 digits, a few minutes
    python examples/certified_training.py --data-dir ~/mnist  # MNIST from its four IDX files

Trains an MLP with standard training, PGD adversarial training (Madry et al., 2018), IBP
(Gowal et al., 2018), CROWN-IBP (Zhang et al., 2020) and PGD with the ReLU-stability and L1
terms (Xiao et al., 2019), all at the l_inf radius --train-eps reached by a linear ramp. Then, at
each eps of --eps and on the first --images test images, it prints per model: clean accuracy,
PGD accuracy (50 steps, 2 restarts), verified accuracy by IBP, CROWN and alpha-CROWN, the mean
number of unstable ReLUs (CROWN bounds), and the accuracy the exact MILP verifier proves with the
median, mean and maximum seconds per image (an image still open at --time-limit counts as
unknown). On every row clean >= PGD >= MILP >= alpha-CROWN >= CROWN: each proof is sound, and
the MILP is complete up to its time limit.
"""

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcert as jc

MODELS = {  # name: (training method, ReLU-stability weight, L1 weight)
    "standard": ("standard", 0.0, 0.0),
    "pgd": ("pgd", 0.0, 0.0),
    "ibp": ("ibp", 0.0, 0.0),
    "crown-ibp": ("crown-ibp", 0.0, 0.0),
    "pgd+relu-stability": ("pgd", 0.01, 1e-4),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX files (default: bundled digits)")
    parser.add_argument("--hidden", default=None, help="hidden widths (default 64,32,32 digits, "
                        "100,100 MNIST)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="default 100 digits, 20 MNIST")
    parser.add_argument("--train-eps", type=float, default=0.1, help="training radius")
    parser.add_argument("--eps", default="0.05,0.1", help="evaluation radii")
    parser.add_argument("--images", type=int, default=100, help="test images evaluated")
    parser.add_argument("--time-limit", type=float, default=5.0, help="MILP seconds per image")
    parser.add_argument("--models", default=",".join(MODELS), help="which models to train")
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    return args


def train(name, data, hidden, epochs, train_eps):
    """Train one model; eps (and kappa, beta) follow `jaxcert.train.ramp_schedules`."""
    (train_x, train_y), _ = data
    method, stability, l1 = MODELS[name]
    apply_fn, params = jc.models.init_model(
        {"kind": "mlp", "hidden": list(hidden)}, jax.random.key(0), train_x.shape[1:]
    )
    batch = 64 if len(train_x) < 10_000 else 128
    steps = epochs * -(-len(train_x) // batch)
    schedules = jc.train.ramp_schedules(method, 1.1 * train_eps, steps)
    loss_fn = jc.train.training_loss(method, relu_stability_weight=stability, l1_weight=l1)
    began = time.perf_counter()
    params = jc.train.fit(
        apply_fn,
        params,
        train_x,
        train_y,
        jax.random.key(1),
        epochs=epochs,
        loss_fn=loss_fn,
        batch_size=batch,
        **schedules,
    )
    return apply_fn, params, time.perf_counter() - began


def evaluate(apply_fn, params, x, y, eps, time_limit):
    """One table row's figures for one model at one eps."""
    net = jc.trace(apply_fn, params, x[:1])
    spec = jc.LinfBall(x, eps)
    _, attack = jc.attacks.pgd(apply_fn, params, x, y, jax.random.key(2), eps, steps=50, restarts=2)
    row = {
        "clean": jc.train.accuracy(apply_fn, params, x, y),
        "pgd": float(jnp.mean(attack < 0)),
    }
    for method in ("ibp", "crown", "alpha-crown"):
        row[method] = float(jnp.mean(jc.bounds.certify(net, spec, y, method)))
    row["unstable"] = float(sum(np.mean(c["unstable"]) for c in jc.bounds.relu_counts(net, spec)))
    results = jc.exact.verify(net, spec, y, time_limit=time_limit, strategy="milp")
    seconds = [r.seconds for r in results]
    row["milp"] = np.mean([r.status == "verified" for r in results])
    row["unknown"] = sum(r.status == "unknown" for r in results)
    row.update(median_s=np.median(seconds), mean_s=np.mean(seconds), max_s=max(seconds))
    return row


def main():
    args = parse_args()
    mnist = args.data_dir is not None
    if mnist:
        data = tuple(jc.data.load_mnist(args.data_dir, split) for split in ("train", "test"))
    else:
        data = tuple(jc.data.load_digits(split) for split in ("train", "test"))
    hidden = [int(h) for h in (args.hidden or ("100,100" if mnist else "64,32,32")).split(",")]
    epochs = args.epochs or (20 if mnist else 100)
    epsilons = [float(e) for e in args.eps.split(",")]
    x, y = (a[: args.images] for a in data[1])
    layers = [int(np.prod(x.shape[1:])), *hidden, 10]
    print(
        f"{'MNIST' if mnist else 'digits'}: MLP {'-'.join(map(str, layers))}, {epochs} epochs, "
        f"trained at eps {args.train_eps}; the first {len(x)} test images, MILP limit "
        f"{args.time_limit:g} s per image\n",
        flush=True,
    )
    print(
        "| model | train s | eps | clean | PGD | IBP | CROWN | alpha-CROWN | unstable ReLUs "
        "| MILP verified | unknown | median s | mean s | max s |"
    )
    print("|---" * 14 + "|", flush=True)
    for name in args.models.split(","):
        apply_fn, params, seconds = train(name, data, hidden, epochs, args.train_eps)
        for eps in epsilons:
            r = evaluate(apply_fn, params, x, y, eps, args.time_limit)
            print(
                f"| {name} | {seconds:.1f} | {eps} | {r['clean']:.3f} | {r['pgd']:.3f} "
                f"| {r['ibp']:.3f} | {r['crown']:.3f} | {r['alpha-crown']:.3f} "
                f"| {r['unstable']:.1f} | {r['milp']:.3f} | {r['unknown']} "
                f"| {r['median_s']:.3f} | {r['mean_s']:.3f} | {r['max_s']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
