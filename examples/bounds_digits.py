"""Verify a digits classifier against l_inf perturbations with every bound method.

    python examples/bounds_digits.py [--model relu-mlp|sigmoid-mlp|maxpool-cnn]

Trains a small network on the bundled 8x8 digits (a few seconds): a ReLU MLP (default), a
sigmoid MLP or a CNN with max pooling; traces it, and prints the fraction of test images each
method proves robust at several eps (pixels in [0, 1]). Each method is sound,
so a higher fraction only means a tighter method; the LP is the tightest of these relaxations for
the same intermediate bounds. No method here is complete: an image none of them verifies may
still be robust (`jaxcert.exact` decides).
"""

import argparse
import time

import jax
import numpy as np

import jaxcert as jc

IMAGES = 100
EPSILONS = (0.005, 0.01, 0.02, 0.05)
METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown", "lp")
OPTIONS = {"lp": {"intermediate": "crown"}}  # the LP with CROWN's intermediate bounds

MODELS = {
    "relu-mlp": ("MLP 64-64-10", {"kind": "mlp", "hidden": [64, 64]}),
    "sigmoid-mlp": ("sigmoid MLP 64-64-10", {"kind": "mlp", "hidden": [64, 64],
                                             "activation": "sigmoid"}),
    "maxpool-cnn": ("CNN conv8-maxpool-conv16-maxpool-dense32", {
        "kind": "cnn", "channels": [8, 16], "dense": 32, "pool": "max"}),
}  # fmt: skip
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", choices=tuple(MODELS), default="relu-mlp")
name, spec_model = MODELS[parser.parse_args().model]
if spec_model["kind"] == "cnn":  # the LP's dense layer matrices are too large for a CNN here
    METHODS = METHODS[:-1]

train_x, train_y = jc.data.load_digits("train")
test_x, test_y = jc.data.load_digits("test")
apply_fn, params = jc.models.init_model(spec_model, jax.random.key(0), train_x.shape[1:])
params = jc.train.fit(apply_fn, params, train_x, train_y, jax.random.key(1), sigma=0.0, epochs=30)
x, y = test_x[:IMAGES], test_y[:IMAGES]
correct = np.asarray(jax.numpy.argmax(apply_fn(params, x), axis=1) == y)
print(f"{name} on digits: clean accuracy {correct.mean():.3f} on {IMAGES} test images")

net = jc.trace(apply_fn, params, x[:1])
print("\nverified accuracy (an image counts if it is classified correctly and proved robust)")
print("| eps | " + " | ".join(METHODS) + " |")
print("|---|" + "---|" * len(METHODS))
seconds = dict.fromkeys(METHODS, 0.0)
for eps in EPSILONS:
    spec = jc.LinfBall(x, eps)
    cells = []
    for method in METHODS:
        began = time.perf_counter()
        verified = np.asarray(
            jc.bounds.certify(net, spec, y, method=method, **OPTIONS.get(method, {}))
        )
        seconds[method] += time.perf_counter() - began
        cells.append(f"{np.mean(verified & correct):.2f}")
    print(f"| {eps} | " + " | ".join(cells) + " |")
print(
    "\nseconds per method over all eps (compilation included): "
    + ", ".join(f"{m} {s:.2f}" for m, s in seconds.items())
)
