"""Timing helpers shared by the benchmark scripts: warm-up apart, median of repeats."""

import os
import platform
import statistics
import time

import jax
import numpy as np


def time_call(fn, repeats):
    """(first-call seconds, median steady-state seconds) of `fn()`, blocking on its result."""
    first, runs = time_rounds({"call": fn}, repeats)["call"]
    return first, statistics.median(runs)


def time_rounds(cases, repeats):
    """Time every `fn()` of the dict `cases` once per round, round after round, so that a slow
    spell of a shared machine slows every case alike. Returns {case: (first-call seconds, the
    steady seconds of each round)}."""
    first = {}
    for case, fn in cases.items():
        began = time.perf_counter()
        jax.block_until_ready(fn())
        first[case] = time.perf_counter() - began
    runs = {case: [] for case in cases}
    for _ in range(repeats):
        for case, fn in cases.items():
            began = time.perf_counter()
            jax.block_until_ready(fn())
            runs[case].append(time.perf_counter() - began)
    return {case: (first[case], runs[case]) for case in cases}


def median_ratio(slow, fast):
    """The median over rounds of slow[i] / fast[i] (a speedup, round by round)."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def machine():
    """Where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
