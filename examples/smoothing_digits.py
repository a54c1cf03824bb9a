"""Train a base classifier under Gaussian noise in your own optax loop, then certify it.

    python examples/smoothing_digits.py

Runs in well under a minute on a laptop CPU. Steps: a Flax MLP on the bundled 8x8 digits, a
hand-written training loop around `jaxcert.train.make_train_step`, CERTIFY (l2 radius) and
PREDICT on the test split, and the certified-accuracy table.
"""

import jax
import numpy as np
import optax

import jaxcert as jc

SIGMA, N0, N, ALPHA = 0.25, 100, 10_000, 0.001

# 1. Data and a Flax linen model: apply_fn(params, x) -> logits.
train_x, train_y = jc.data.load_digits("train")
test_x, test_y = jc.data.load_digits("test")
spec = {"kind": "mlp", "hidden": [256, 256], "num_classes": 10}
apply_fn, params = jc.models.init_model(spec, jax.random.key(0), train_x.shape[1:])

# 2. Gaussian data augmentation (Cohen et al. 2019) inside an ordinary optax loop.
optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)
step = jc.train.make_train_step(apply_fn, optimizer, sigma=SIGMA)
key = jax.random.key(1)
for epoch in range(40):
    order = np.random.default_rng(epoch).permutation(len(train_x))
    for i in range(0, len(order), 128):
        batch = order[i : i + 128]
        key, sub = jax.random.split(key)
        params, opt_state, loss, _ = step(params, opt_state, train_x[batch], train_y[batch], sub)
base_accuracy = jc.train.accuracy(apply_fn, params, test_x, test_y)
print(f"base classifier: clean test accuracy {base_accuracy:.3f}")

# 3. CERTIFY the smoothed classifier on the whole test split at once.
cert = jc.smoothing.certify(
    apply_fn,
    params,
    test_x,
    jax.random.key(2),
    sigma=SIGMA,
    num_classes=10,
    n0=N0,
    n=N,
    alpha=ALPHA,
)
correct = cert.prediction == test_y
radii = [0.0, 0.25, 0.5, 0.75]
table = jc.smoothing.certified_accuracy_table(cert.radius, correct, radii, alpha=ALPHA)
print(
    f"smoothed classifier, sigma={SIGMA}, n={N}: abstained on {np.mean(cert.prediction == -1):.1%}"
)
for r, acc, low in zip(table.radii, table.accuracy, table.lower_bound):
    print(f"  certified accuracy at l2 radius {r:.2f}: {acc:.3f} (>= {low:.3f} w.p. 0.999)")
print(f"  no radius above {jc.smoothing.radius_cap(SIGMA, N, ALPHA):.3f} is possible with n={N}")

# 4. PREDICT: a cheaper answer that is wrong with probability at most alpha.
prediction, _ = jc.smoothing.predict(
    apply_fn,
    params,
    test_x[:50],
    jax.random.key(3),
    sigma=SIGMA,
    num_classes=10,
    n=1000,
    alpha=ALPHA,
)
answered = prediction != -1
print(
    f"PREDICT on 50 images: answered {answered.sum()}, "
    f"of which correct {np.mean(prediction[answered] == test_y[:50][answered]):.3f}"
)
