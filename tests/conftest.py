"""Shared fixtures. Float64 is enabled per test with `jax.enable_x64(True)`, never globally."""

import os

import jax
import pytest

# The command line keeps compilations in a folder under the user's home (jaxcert.cli's
# `_compile_cache`); the tests that run it, in this process or in others, keep none.
os.environ["JAXCERT_COMPILE_CACHE"] = "off"
# The default run compiles far more than it computes: without LLVM's optimisation passes and
# XLA's newer fusion emitters a CROWN pass over tests/test_activations.py's MLP compiles in 2.5 s
# instead of 7.7 s on 2 cores. Set XLA_FLAGS (even to "") to test with XLA's own settings.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped, restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=[False, True], ids=["x64-off", "x64-on"])
def either_x64(request):
    """Run the test body twice: with float64 off (JAX's default) and on, as a user who sets
    `jax_enable_x64` at the top of a script has it. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("either_x64")`."""
    with jax.enable_x64(request.param):
        yield request.param
