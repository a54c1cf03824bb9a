"""Argument checks shared by the public functions: fail early, name the argument."""

import jax
import numpy as np


def concrete(value):
    """The value as a NumPy array, or None when it is a tracer (inside jit nothing is checked)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def check_open_unit(name, value):
    """Require 0 < value < 1 elementwise (a probability level such as alpha)."""
    v = concrete(value)
    if v is not None and not np.all((v > 0) & (v < 1)):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {_show(v)}")


def check_positive(name, value):
    """Require a finite value > 0 elementwise (a noise level such as sigma)."""
    v = concrete(value)
    if v is not None and not np.all(np.isfinite(v) & (v > 0)):
        raise ValueError(f"{name} must be finite and > 0, got {_show(v)}")


def check_nonnegative(name, value):
    """Require a finite value >= 0 elementwise (a weight or a radius such as eps)."""
    v = concrete(value)
    if v is not None and not np.all(np.isfinite(v) & (v >= 0)):
        raise ValueError(f"{name} must be finite and >= 0, got {_show(v)}")


def check_count(name, value, minimum=1):
    """Require a Python/NumPy integer >= minimum (a static size such as n or batch_size)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name, value, choices, note=""):
    """Require value to be one of `choices` (a method, a solver, a norm, ...)."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(choices)}{note}")
    return value


def check_counts(k_name, k, n_name, n):
    """Require integer-valued counts with 0 <= k <= n and n >= 1 (elementwise, broadcast)."""
    kv, nv = concrete(k), concrete(n)
    if nv is not None and not (np.all(nv == np.floor(nv)) and np.all(nv >= 1)):
        raise ValueError(f"{n_name} must be an integer >= 1, got {_show(nv)}")
    if kv is not None and not np.all(kv == np.floor(kv)):
        raise ValueError(f"{k_name} must be integer-valued, got {_show(kv)}")
    if kv is not None and nv is not None and not np.all((kv >= 0) & (kv <= nv)):
        raise ValueError(f"{k_name} must satisfy 0 <= {k_name} <= {n_name}")


def check_finite(name, value):
    """Require every entry to be finite (no NaN or infinity)."""
    v = concrete(value)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")


def _show(v):
    v = np.asarray(v)
    return repr(v.item()) if v.size == 1 else f"an array with values in [{v.min()}, {v.max()}]"
