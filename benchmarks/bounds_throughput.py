"""Images per second of the bound methods on MNIST-sized CNNs and MLPs. Prints JSON.

Models (random weights, as no data is downloaded): a CNN with two stride-2 4x4 convolutions of
16 and 32 channels, a 100-unit dense layer and 10 outputs (3136 + 1568 + 100 ReLUs), and a
784-256-256-10 MLP, both with ReLUs; the same MLP with tanh; and the CNN with stride-1
convolutions each followed by 2x2 max pooling (IBP and CROWN-IBP only: its pools are trees of
ReLUs whose full-CROWN intermediate bounds take minutes per batch). A batch of 100 inputs in
[0, 1], an l_inf ball of eps = 0.1, bounds of the 10 logits. For each method: compile time
apart, the median steady time of several runs, and
XLA's temporary memory for the compiled computation. The baseline in the same run is IBP.

    python benchmarks/bounds_throughput.py [--images 100] [--eps 0.1] [--repeats 3]
"""

import argparse
import json
import math

import jax
from _common import machine, time_call

import jaxcert as jc

MODELS = {
    "cnn_4x4s2_16_32_100": {"kind": "cnn", "channels": [16, 32], "dense": 100, "kernel": 4},
    "mlp_784_256_256_10": {"kind": "mlp", "hidden": [256, 256]},
    "mlp_784_256_256_10_tanh": {"kind": "mlp", "hidden": [256, 256], "activation": "tanh"},
    "cnn_4x4_maxpool_16_32_100": {
        "kind": "cnn", "channels": [16, 32], "dense": 100, "kernel": 4, "pool": "max"
    },
}
ONLY = {"cnn_4x4_maxpool_16_32_100": ("ibp", "crown-ibp")}  # methods a model is limited to
METHODS = {
    "ibp": lambda net, spec: jc.bounds.ibp(net, spec),
    "crown-ibp": lambda net, spec: jc.bounds.crown(net, spec, intermediate="ibp"),
    "crown": lambda net, spec: jc.bounds.crown(net, spec),
    "alpha-crown-20": lambda net, spec: jc.bounds.alpha_crown(net, spec, steps=20),
}


def temp_bytes(fn, *args):
    """XLA's temporary buffer size for fn(*args), where the backend reports it."""
    try:
        analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
        return int(analysis.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend or method reports memory
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    args = parser.parse_args()
    x = jax.random.uniform(jax.random.key(1), (args.images, 28, 28, 1))
    spec = jc.LinfBall(x, args.eps)
    results = {}
    for name in args.models.split(","):
        apply_fn, params = jc.models.init_model(MODELS[name], jax.random.key(0), x.shape[1:])
        net = jc.trace(apply_fn, params, x[:1])
        rows = {"activations": sum(math.prod(e.outputs[0].shape) for e in net.activations())}
        for method in args.methods.split(","):
            if method not in ONLY.get(name, METHODS):
                continue
            fn = METHODS[method]
            first, steady = time_call(lambda fn=fn, net=net: fn(net, spec), args.repeats)
            bounds = fn(net, spec)
            rows[method] = {
                "images_per_s": args.images / steady,
                "steady_s": steady,
                "compile_s": max(first - steady, 0.0),
                "temp_bytes": temp_bytes(fn, net, spec) if method != "alpha-crown-20" else None,
                "mean_width": float((bounds.upper - bounds.lower).mean()),
            }
        results[name] = rows
    print(
        json.dumps(
            {
                "benchmark": "bounds_throughput",
                "machine": machine(),
                "images": args.images,
                "eps": args.eps,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
