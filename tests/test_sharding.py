"""Eight CPU devices give the counts and bounds of one device."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

COMPUTE = textwrap.dedent(
    """
    import jax, numpy as np
    import jaxcert as jc

    def compute():
        x, y = jc.data.load_digits("test")
        x, y = x[:13], y[:13]  # 13 images: padded to 16 on 8 devices
        spec = {"kind": "cnn", "channels": [4, 8], "dense": 16}
        apply_fn, params = jc.models.init_model(spec, jax.random.key(0), x.shape[1:])
        out = {"devices": np.asarray(jax.device_count())}
        out["counts"] = jc.smoothing.sample_counts(
            apply_fn, params, x, jax.random.key(1), sigma=0.5, num=1003, num_classes=10,
            batch_size=512,
        )
        cert = jc.smoothing.certify(apply_fn, params, x, jax.random.key(2), sigma=0.5,
                                    num_classes=10, n0=50, n=500, alpha=0.001)
        out["prediction"], out["radius"] = cert.prediction, cert.radius
        net = jc.trace(apply_fn, params, x[:1])
        spec = jc.LinfBall(x, 0.05)
        for method in ("ibp", "crown", "crown-ibp", "alpha-crown"):
            out[method] = jc.bounds.margins(net, spec, y, method=method)
        hidden = jc.bounds.intermediate_bounds(net, spec)
        out["hidden_lower"], out["hidden_upper"] = hidden[1].lower, hidden[1].upper
        # Branch and bound's batches of 13 domains: activation splits of image 0, input boxes.
        low, high = (np.concatenate([np.asarray(getattr(b, side))[:1].reshape(1, -1)
                                     for b in hidden], 1) for side in ("lower", "upper"))
        splits = np.random.default_rng(0).choice(np.array([-1, 0, 0, 0, 1], np.int8),
                                                 (13, low.shape[1]))
        C = jc.bounds.margin_matrix(y[:1], 10)[0]
        domains = jc.bounds.bound_relu_domains(
            net, jax.tree.map(lambda a: a[0], spec), C, jax.numpy.zeros(9),
            np.tile(low, (13, 1)), np.tile(high, (13, 1)), splits, None, None, steps=3,
        )
        out["relu_domains"] = domains.lower
        boxes = jc.bounds.bound_input_domains(net, *spec.box(), C, jax.numpy.zeros(9))
        out["input_domains"] = boxes.lower
        return {k: np.asarray(v) for k, v in out.items()}
    """
)


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
    script = COMPUTE + "\nnp.savez(__import__('sys').argv[1], **compute())\n"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "eight.npz")],
        check=True,
        env=env,
        timeout=600,
        capture_output=True,
    )
    eight = np.load(tmp_path / "eight.npz")
    namespace = {}
    exec(COMPUTE, namespace)
    one = namespace["compute"]()
    assert int(one["devices"]) == jax.device_count() == 1 and int(eight["devices"]) == 8
    for name in ("counts", "prediction", "radius"):  # integer counts: identical
        np.testing.assert_array_equal(eight[name], one[name], err_msg=name)
    for name in ("ibp", "crown", "crown-ibp", "alpha-crown", "hidden_lower", "hidden_upper",
                 "relu_domains", "input_domains"):
        # The same bounds, up to float32 rounding in XLA's per-device programs.
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-6, atol=1e-6, err_msg=name)
