"""Two JAX processes joined by `jax.distributed.initialize` give one process's certificate.

The processes run on this machine (coordinator on 127.0.0.1, CPU collectives over Gloo), one CPU
device each, so the samples of every image are split over two devices in two processes:
tests/multihost_worker.py is the script each of them runs.
"""

import json
import os
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT = 120  # seconds for both processes together: never hang on a lost peer


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes=2):
    """Start the worker processes; returns the Popen objects."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_NUM_CPU_DEVICES", None)  # one CPU device per process
    # the compiler's flags as in this process (the reference), less any device count
    flags = env.pop("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    if kept:
        env["XLA_FLAGS"] = " ".join(kept)
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), coordinator, str(processes), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]


def collect(workers, deadline):
    """Each worker's JSON result; kills them all on a timeout or a failure."""
    results = []
    try:
        for i, worker in enumerate(workers):
            out, err = worker.communicate(timeout=max(deadline - time.monotonic(), 1))
            assert worker.returncode == 0, f"process {i} failed:\n{err[-4000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return results


def collect_quietly(workers):
    for worker in workers:
        worker.kill()
        worker.communicate()


def test_two_processes_certify_like_one():
    deadline = time.monotonic() + TIMEOUT
    workers = launch()
    try:  # the single-process reference, in this process, while the workers run
        one = runpy.run_path(str(WORKER))["run"]()
    except BaseException:
        collect_quietly(workers)
        raise
    results = collect(workers, deadline)
    for i, result in enumerate(results):
        assert (result["process_index"], result["process_count"]) == (i, 2)
        assert result["device_count"] == 2  # one CPU device per process, both in the mesh
        exact = ("counts", "selected", "prediction", "radius", "p_lower", "num_samples")
        for name in (*exact, "sequential_radius", "sequential_num_samples"):
            # Integer counts are identical, so is everything computed from them.
            np.testing.assert_array_equal(result[name], one[name], err_msg=f"{i}: {name}")
        for name in ("ibp", "crown"):  # batch-sharded bounds: equal up to float32 rounding
            np.testing.assert_allclose(result[name], one[name], rtol=1e-6, atol=1e-6)
        # Other images on each process are refused, on every process alike.
        assert "must be the same on every process" in result["mismatch"]
    assert np.max(one["radius"]) > 0.5 and -1 in one["prediction"]  # not a degenerate case
