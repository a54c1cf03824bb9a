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
    assert doc["benchmark"] == "bounds_throughput" and doc["images"] == 2
    # --quick never rewrites the README's table
    assert (folder / "README.md").read_text() == "# Benchmarks\n\nhand-written text\n"
    bench.write_readme(folder / "README.md", bench.markdown({"bounds": doc}, bench.versions()))
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# Benchmarks\n\nhand-written text\n")
    assert readme.count(bench.START) == 1 and "| cnn_4x4s2_16_32_100 | ibp |" in readme
    assert "jax " in readme and "ortools " in readme  # library versions
    # A second run replaces the section instead of adding one.
    bench.write_readme(folder / "README.md", bench.markdown({"bounds": doc}, bench.versions()))
    assert (folder / "README.md").read_text().count(bench.START) == 1
    assert "| cnn_4x4s2_16_32_100 | ibp |" in capsys.readouterr().out


def _stored_runs(monkeypatch, folder):
    """bench.run without running anything: each script "prints" the stored bounds figures."""
    doc = json.loads((BENCHMARKS / "latest_bounds_cpu.json").read_text())
    (folder / "bounds_throughput.py").write_text("")
    monkeypatch.setattr(bench, "_start", lambda directory, name, quick: (name, quick))
    monkeypatch.setattr(bench, "_finish", lambda name, process: doc)
    return doc


@pytest.mark.parametrize("quick", [False, True])
def test_the_readme_table_is_written_only_on_request(tmp_path, monkeypatch, capsys, quick):
    _stored_runs(monkeypatch, tmp_path)
    text = "# Benchmarks\n\nhand-written text\n"
    (tmp_path / "README.md").write_text(text)
    argv = ["bench", "--dir", str(tmp_path), "--only", "bounds"] + (["--quick"] if quick else [])
    assert main(argv) == 0
    assert (tmp_path / "README.md").read_text() == text  # not asked: untouched
    assert str(tmp_path / "README.md") not in capsys.readouterr().err
    assert len(list((tmp_path / "results").glob("bounds-*.json"))) == 1
    if quick:  # a smoke test's figures never replace the table
        assert main([*argv, "--update-readme"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--update-readme" in err[0]
        with pytest.raises(ValueError, match="never replace"):
            bench.run(tmp_path, ["bounds"], quick=True, update_readme=True)
        assert (tmp_path / "README.md").read_text() == text
    else:
        assert main([*argv, "--update-readme"]) == 0
        readme = (tmp_path / "README.md").read_text()
        assert readme.startswith(text) and readme.count(bench.START) == 1
        assert f"and {tmp_path / 'README.md'}" in capsys.readouterr().err


def test_quick_arguments_are_tiny():
    """--quick runs each script at tiny sizes (the whole smoke test is under a minute on two
    cores): one network, one eps and one solver for exact, one model for smoothing."""
    quick = {name: arguments[2] for name, arguments in bench.SCRIPTS.items()}
    assert quick["exact"][quick["exact"].index("--networks") + 1] == "digits"
    assert quick["exact"][quick["exact"].index("--eps") + 1] == "0.02"
    assert "--models" in quick["smoothing"] and quick["bounds"][-2:] == ["--methods", "ibp"]


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


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("[!_]*.py")))
def test_every_benchmark_script_imports(script):
    """Each script's imports resolve against the library as it is (a moved private helper once
    broke `bench` while every other test passed): `--help` imports everything, then exits."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout
