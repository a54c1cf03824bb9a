"""Points inside input sets, for soundness tests: every bound must contain their outputs."""

import numpy as np


def sample_set(kind, x, eps, num, seed=0, lower=0.0, upper=1.0):
    """`num` points of the `kind` ("linf", "l2", "l1") ball around x (one input), in the box.

    For l_inf a third of the points are vertices of the box (where extremes of a piecewise-linear
    network are attained). Clipping an l_p ball point into the box keeps it in the ball, since x
    lies in the box.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    d = x.size
    if kind == "linf":
        delta = rng.uniform(-eps, eps, (num, d))
        corners = num // 3
        delta[:corners] = eps * rng.choice([-1.0, 1.0], (corners, d))
    elif kind == "l2":
        g = rng.normal(size=(num, d))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        delta = g * eps * rng.uniform(0, 1, (num, 1)) ** (1 / d)
    elif kind == "l1":
        e = rng.exponential(size=(num, d + 1))
        delta = (e[:, :d] / e.sum(axis=1, keepdims=True)) * eps
        delta *= rng.choice([-1.0, 1.0], (num, d))
        delta[: num // 10] = 0
        axis = rng.integers(0, d, num // 10)
        delta[np.arange(num // 10), axis] = eps * rng.choice([-1.0, 1.0], num // 10)
    else:
        raise ValueError(kind)
    points = np.clip(x.reshape(1, -1) + delta, lower, upper)
    return points.reshape((num, *x.shape)).astype(np.float32)
