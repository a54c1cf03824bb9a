"""jaxcert bench: it runs a script, keeps its JSON and writes the README table."""

import json
import shutil
from pathlib import Path

import pytest

from jaxcert import bench
from jaxcert.cli import main

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_bench_runs_a_script_and_writes_json_and_the_table(tmp_path, capsys):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name in ("_common.py", "bounds_throughput.py"):
        shutil.copy(BENCHMARKS / name, folder / name)
    (folder / "README.md").write_text("# Benchmarks\n\nhand-written text\n")
    assert main(["bench", "--dir", str(folder), "--only", "bounds", "--quick"]) == 0
    [written] = list((folder / "results").glob("bounds-*.json"))
    doc = json.loads(written.read_text())
    assert doc["benchmark"] == "bounds_throughput" and doc["images"] == 4
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# Benchmarks\n\nhand-written text\n")
    assert readme.count(bench.START) == 1 and "| cnn_4x4s2_16_32_100 | ibp |" in readme
    assert "jax " in readme and "ortools " in readme  # library versions
    # A second run replaces the section instead of adding one.
    bench.write_readme(folder / "README.md", bench.markdown({"bounds": doc}, bench.versions()))
    assert (folder / "README.md").read_text().count(bench.START) == 1
    assert "| cnn_4x4s2_16_32_100 | ibp |" in capsys.readouterr().out


def test_tables_of_the_stored_results():
    for name, file in (("smoothing", "latest_cpu.json"), ("exact", "latest_exact_digits_cpu.json")):
        doc = json.loads((BENCHMARKS / file).read_text())
        lines = bench.TABLES[name](doc)
        assert lines[0].startswith("| ") and len(lines) > 2
        assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_bench_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "--dir", str(tmp_path), "--only", "bounds"]) == 2
    assert main(["bench", "--dir", str(tmp_path), "--only", "nope"]) == 2
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("jaxcert bench:")]
    assert len(err) == 2 and "bounds_throughput.py not found" in err[0] and "nope" in err[1]
