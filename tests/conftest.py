"""Shared fixtures. Float64 is enabled per test with `jax.enable_x64(True)`, never globally."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped, restored afterwards)."""
    with jax.enable_x64(True):
        yield
