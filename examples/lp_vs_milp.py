"""The LP relaxation against the exact MILP, class by class, on one digits image.

    python examples/lp_vs_milp.py

For each target class j the script prints the minimum of the margin f_y - f_j over an l_inf
ball, as the triangle LP relaxation bounds it and as the MILP decides it, with the same ReLU
bounds. Always LP <= MILP. A negative MILP optimum means an adversarial example exists for
that class; a positive one means none exists. When the LP is negative but the MILP positive,
only the exact method can prove robustness.
"""

import jax
import numpy as np

import jaxcert as jc

EPS = 0.1

train_x, train_y = jc.data.load_digits("train")
test_x, test_y = jc.data.load_digits("test")
apply_fn, params = jc.models.init_model(
    {"kind": "mlp", "hidden": [32, 32]}, jax.random.key(0), train_x.shape[1:]
)
params = jc.train.fit(apply_fn, params, train_x, train_y, jax.random.key(1), sigma=0.0, epochs=30)
net = jc.trace(apply_fn, params, test_x[:1])
x, y = test_x[:1], test_y[:1]
spec = jc.LinfBall(x, EPS)
lp, milp = jc.exact.margin_optima(net, spec, y)
crown = np.asarray(jc.bounds.margins(net, spec, y, method="crown"))
print(f"image 0 (label {y[0]}), l_inf eps {EPS}: minimum of f_{y[0]} - f_j")
print("| j | CROWN | LP | MILP | answer |")
print("|---|---|---|---|---|")
for j in range(10):
    if j == y[0]:
        continue
    answer = "robust" if milp[0, j] > 0 else "adversarial example exists"
    print(f"| {j} | {crown[0, j]:.4f} | {lp[0, j]:.4f} | {milp[0, j]:.4f} | {answer} |")
result = jc.exact.verify(net, spec, y, strategy="milp")[0]
print(
    f"\njaxcert.exact.verify: {result.status} in {result.seconds:.2f} s "
    f"({result.binaries} binary variables)"
)
