"""The examples run as a user would run them."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_smoothing_digits_example():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "smoothing_digits.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    assert "certified accuracy at l2 radius 0.50" in out
    clean = float(out.split("clean test accuracy ")[1].split()[0])
    assert clean > 0.9


@pytest.mark.slow
def test_bounds_digits_example():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "bounds_digits.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 4
    for row in rows:
        _, _, crown, alpha, lp = (float(v) for v in row[1:])
        assert crown <= alpha + 1e-9 and crown <= lp + 1e-9  # IBP vs CROWN: no order
