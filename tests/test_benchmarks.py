"""The benchmark scripts run at tiny sizes and print the JSON they promise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_smoothing_throughput_prints_json():
    out = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "smoothing_throughput.py"),
            "--images",
            "2",
            "--num",
            "64",
            "--repeats",
            "1",
            "--batch-size",
            "32",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    report = json.loads(out)
    assert report["machine"]["backend"] == "cpu"
    for result in report["results"].values():
        for case in ("fused", "noise_alone", "model_alone", "per_image_baseline"):
            assert result[case]["evals_per_s"] > 0 and result[case]["compile_s"] >= 0
        assert result["roofline_fraction"] > 0
        assert result["speedup_vs_per_image_baseline"] > 0
    assert report["results"]["mlp_784_256_256_10"]["speedup_vs_numpy_loop"] > 0


@pytest.mark.slow
def test_smoothing_sequential_prints_json():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "smoothing_sequential.py"), "--images", "6",
         "--n", "1000", "--epochs", "1"],
        check=True, capture_output=True, text=True, timeout=600,
    ).stdout  # fmt: skip
    report = json.loads(out)
    assert report["images"] == 6 and report["fixed"]["mean_samples"] == 1100
    for result in report["targets"].values():
        assert 0 < result["mean_samples_sequential"] <= 1100
        assert 0 <= result["certified_accuracy_sequential"] <= 1
