"""The examples run as a user would run them."""

import subprocess
import sys
from pathlib import Path

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
