"""The examples run as a user would run them."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mnist_files import write_mnist

import jaxcert as jc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
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


def _table(out):
    """The markdown rows of an example's table, as lists of cells."""
    return [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]


@pytest.mark.slow
def test_certified_training_example_runs_on_mnist_files(tmp_path):
    # MNIST-format files made from the digits (upscaled to 28x28): the MNIST path end to end.
    for split in ("train", "test"):
        x, y = jc.data.load_digits(split)
        images = np.pad(np.kron(x[..., 0], np.ones((3, 3))), ((0, 0), (2, 2), (2, 2))) * 255
        write_mnist(tmp_path, split, images[:300], y[:300])
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "certified_training.py"), "--data-dir", str(tmp_path),
         "--models", "standard,ibp", "--hidden", "16", "--epochs", "2", "--images", "8",
         "--time-limit", "5"],  # fmt: skip
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    assert out.startswith("MNIST: MLP 784-16-10, 2 epochs")
    rows = _table(out)
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [
        ("standard", "0.05"), ("standard", "0.1"), ("ibp", "0.05"), ("ibp", "0.1")
    ]  # fmt: skip
    for row in rows:
        clean, pgd, ibp, crown, alpha, _, milp, unknown = (float(v) for v in row[3:11])
        assert clean >= pgd >= milp and alpha >= crown  # sound attacks and proofs
        assert unknown > 0 or milp >= alpha  # the MILP is complete within its time limit
