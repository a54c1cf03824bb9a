"""One process of a multi-process run of `certify` (see tests/test_multihost.py and the README).

    python tests/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID

joins the NUM_PROCESSES JAX processes at COORDINATOR (host:port, served by process 0) and prints
its results as JSON on the last line of stdout; with NUM_PROCESSES = 0 it runs alone, without
`jax.distributed.initialize`. Every process computes the same certificate: the samples of each
image are split over the devices of all processes.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np


def problem():
    """A linear classifier on 16 features, 4 classes (features 4c..4c+3 vote for class c), and
    4 inputs in [0, 1], from clear (a wide radius) to ambiguous (abstains): the same on every
    process, from a fixed key."""
    votes = jnp.repeat(jnp.eye(4), 4, axis=0)  # (16, 4)
    params = (2.0 * votes, jnp.zeros(4))
    clarity = jnp.array([0.8, 0.5, 0.25, 0.0])[:, None]
    x = 0.5 + clarity * (votes.T - 0.5) + 0.05 * jax.random.normal(jax.random.key(0), (4, 16))
    x = jnp.clip(x, 0.0, 1.0)

    def apply_fn(params, inputs):
        return inputs @ params[0] + params[1]

    return apply_fn, params, x


def run():
    """The certificates (fixed n and sequential) and IBP/CROWN margins, as JSON-ready lists."""
    import jaxcert as jc

    apply_fn, params, x = problem()
    common = dict(sigma=0.5, num_classes=4, n0=100, n=2001, alpha=0.001, batch_size=256)
    out = {}
    cert = jc.smoothing.certify(apply_fn, params, x, jax.random.key(3), **common)
    out.update({name: np.asarray(getattr(cert, name)).tolist() for name in cert._fields})
    sequential = jc.smoothing.certify(
        apply_fn, params, x, jax.random.key(4), target_radius=0.3, **common
    )
    out["sequential_radius"] = sequential.radius.tolist()
    out["sequential_num_samples"] = sequential.num_samples.tolist()
    net = jc.trace(apply_fn, params, x[:1])
    y = jnp.argmax(apply_fn(params, x), axis=1)
    for method in ("ibp", "crown"):  # 4 images: sharded over the devices, no padding
        margins = jc.bounds.margins(net, jc.LinfBall(x, 0.02), y, method=method)
        out[method] = np.asarray(margins).tolist()
    return out


def mismatch():
    """The error of `sample_counts` when every process passes other images (None if none)."""
    import jaxcert as jc

    apply_fn, params, x = problem()
    other = x + jax.process_index()
    try:
        jc.smoothing.sample_counts(
            apply_fn, params, other, jax.random.key(3), sigma=0.5, num=100, num_classes=4
        )
    except ValueError as err:
        return str(err)
    return None


if __name__ == "__main__":
    coordinator, processes, process_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # JAX's CPU default
        jax.distributed.initialize(coordinator, num_processes=processes, process_id=process_id)
    out = run()
    out["mismatch"] = mismatch() if processes else None
    out["process_index"], out["process_count"] = jax.process_index(), jax.process_count()
    out["device_count"] = jax.device_count()
    print(json.dumps(out))
