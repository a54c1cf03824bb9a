"""VNN-COMP runs: `jaxcert vnnlib` and `jaxcert vnncomp` on a benchmark folder with known answers.

The folder (`vnncomp_folder.make_benchmark`) holds ONNX networks and VNN-LIB properties whose
answers come from oracles outside jaxcert (construction, NumPy interval arithmetic, a dense grid
with a Lipschitz bound). Every counterexample is re-checked with onnxruntime.
"""

import csv
import gzip
import json
import re
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import jax.numpy as jnp  # noqa: E402
from vnncomp_folder import make_benchmark, make_slow_benchmark  # noqa: E402

import jaxcert as jc  # noqa: E402
from jaxcert import vnncomp  # noqa: E402
from jaxcert.cli import main  # noqa: E402
from jaxcert.vnnlib import read_vnnlib  # noqa: E402


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    return folder, make_benchmark(folder)


def read_counterexample(text):
    """(result, x, y) from a VNN-COMP result file."""
    result, *rest = text.splitlines()
    values = {"X": {}, "Y": {}}
    for kind, index, value in re.findall(r"\(([XY])_(\d+) ([^()\s]+)\)", "\n".join(rest)):
        values[kind][int(index)] = float(value)
    x = np.array([values["X"][i] for i in range(len(values["X"]))])
    y = np.array([values["Y"][j] for j in range(len(values["Y"]))])
    return result, x, y


def check_counterexample(folder, onnx_path, vnnlib_path, text):
    """The written X lies in a box, onnxruntime maps it to the written Y, and Y is unsafe."""
    result, x, y = read_counterexample(text)
    assert result == "sat"
    prop = read_vnnlib(folder / vnnlib_path)
    cases = [c for c in prop.cases if np.all(x >= c.lower) and np.all(x <= c.upper)]  # exactly
    model = vnncomp_model_bytes(folder / onnx_path)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    y_ort = session.run(None, {session.get_inputs()[0].name: x.reshape(shape).astype(np.float32)})
    np.testing.assert_allclose(np.ravel(y_ort[0]), y, rtol=1e-5, atol=1e-5)
    assert any(np.all(C @ y <= d + 1e-5) for case in cases for C, d in case.unsafe)


def vnncomp_model_bytes(path):
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def read_results(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_benchmark_folder_matches_the_oracles_and_resumes(bench_folder, tmp_path, capsys):
    folder, expected = bench_folder
    out = tmp_path / "results.csv"
    assert main(["vnncomp", str(folder / "instances.csv"), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_results(out)
    assert [(r["onnx"], r["vnnlib"]) for r in rows] == list(expected)
    for row in rows:
        want = expected[(row["onnx"], row["vnnlib"])]
        assert row["result"] == (want or row["result"]), row
        assert row["result"] in ("sat", "unsat"), row  # small enough to decide every one
        assert float(row["seconds"]) >= 0
    assert summary["instances"] == len(expected)
    assert summary["sat"] + summary["unsat"] == len(expected)
    per_network = summary["networks"]
    assert sum(n["instances"] for n in per_network.values()) == len(expected)
    identity = per_network["onnx/identity.onnx"]
    assert identity == {**dict.fromkeys(vnncomp.RESULTS, 0), "instances": 1, "unsat": 1,
                        "seconds": identity["seconds"]}  # fmt: skip
    examples = tmp_path / "results_counterexamples"
    sat = [r for r in rows if r["result"] == "sat"]
    assert len(list(examples.iterdir())) == len(sat) >= 3
    for row in sat:
        stem = [vnncomp._stem(row["onnx"]), vnncomp._stem(row["vnnlib"])]
        text = (examples / f"{stem[0]}__{stem[1]}.counterexample").read_text()
        check_counterexample(folder, row["onnx"], row["vnnlib"], text)

    # An interrupted run (three rows and half a fourth written) resumes where it stopped.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:5])
    assert main(["vnncomp", str(folder / "instances.csv"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["vnncomp", str(folder / "instances.csv"), "--out", str(out), "--resume"]) == 0
    table = capsys.readouterr().out
    assert f"| all | {len(expected)} | {summary['unsat']} | {summary['sat']} | 0 | 0 | 0 |" in table
    again = read_results(out)
    assert again[:3] == rows[:3]  # kept as they were, not recomputed
    assert [(r["onnx"], r["vnnlib"], r["result"]) for r in again] == [
        (r["onnx"], r["vnnlib"], r["result"]) for r in rows
    ]


@pytest.mark.slow
def test_vnnlib_command_writes_a_valid_counterexample_from_the_milp(bench_folder, tmp_path, capsys):
    folder, _ = bench_folder
    onnx_path, prop_path = "onnx/tiny2d.onnx", "vnnlib/tiny_sat.vnnlib"
    output = tmp_path / "result.txt"
    argv = ["vnnlib", str(folder / onnx_path), str(folder / prop_path), "--attack-steps", "0"]
    assert main([*argv, "--output", str(output)]) == 0  # no search: the MILP finds it
    printed = capsys.readouterr().out
    assert printed == output.read_text()
    check_counterexample(folder, onnx_path, prop_path, printed)


@pytest.mark.slow
def test_vnnlib_command_proves_a_network_robust_by_construction(bench_folder, capsys):
    folder, _ = bench_folder
    argv = ["vnnlib", str(folder / "onnx/identity.onnx"), str(folder / "vnnlib/robust.vnnlib")]
    assert main(argv) == 0
    assert capsys.readouterr().out == "unsat\n"


def test_the_unsat_threshold_needs_the_milp_and_a_tiny_budget_times_out(bench_folder):
    folder, _ = bench_folder
    net = vnncomp.load_network(folder / "onnx/tiny2d.onnx")
    prop = read_vnnlib(folder / "vnnlib/tiny_unsat.vnnlib")
    [(lower, upper, [(C, d)])] = prop.cases
    box = jc.Box(jnp.asarray(lower[None], jnp.float32), jnp.asarray(upper[None], jnp.float32))
    bound = jc.bounds.crown(net, box, jnp.asarray(C[None], jnp.float32)).lower
    assert not np.any(np.asarray(bound)[0] > d)  # CROWN alone cannot prove it
    result = vnncomp.run_instance(
        net, folder / "vnnlib/tiny_unsat.vnnlib", timeout=1e-9, attack_steps=0
    )
    assert result.result == "timeout" and result.counterexample is None
    assert vnncomp.result_text(result) == "timeout\n"


def test_an_unreadable_instance_is_an_error_row_and_the_run_goes_on(bench_folder, tmp_path, capsys):
    folder, _ = bench_folder
    (folder / "onnx/erf.onnx").write_bytes(_unsupported_model())
    csv_path = folder / "mixed.csv"
    csv_path.write_text(
        "onnx/erf.onnx,vnnlib/robust.vnnlib,10\nonnx/identity.onnx,vnnlib/robust.vnnlib,10\n"
    )
    out = tmp_path / "mixed_results.csv"
    assert main(["vnncomp", str(csv_path), "--out", str(out)]) == 0
    assert [r["result"] for r in read_results(out)] == ["error", "unsat"]
    assert "Erf" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lines, argv, match",
    [
        ("onnx/identity.onnx,vnnlib/robust.vnnlib\n", [], "expected 'onnx,vnnlib,timeout'"),
        ("onnx/identity.onnx,vnnlib/robust.vnnlib,0\n", [], "timeout must be > 0"),
        ("onnx/missing.onnx,vnnlib/robust.vnnlib,10\n", [], "missing: onnx/missing.onnx"),
        ("", [], "lists no instances"),
        ("onnx/identity.onnx,vnnlib/robust.vnnlib,10\n", ["--time-limit", "-1"], "--time-limit"),
        # --timeout, the option's name before, is a hidden alias of --time-limit
        ("onnx/identity.onnx,vnnlib/robust.vnnlib,10\n", ["--timeout", "-1"], "--time-limit"),
    ],
)
def test_bad_benchmark_files_and_options_are_refused(
    bench_folder, tmp_path, capsys, lines, argv, match
):
    folder, _ = bench_folder
    csv_path = folder / "bad.csv"
    csv_path.write_text(lines)
    assert main(["vnncomp", str(csv_path), "--out", str(tmp_path / "r.csv"), *argv]) == 2
    assert match in capsys.readouterr().err


def test_library_options_are_refused_before_any_instance_runs(bench_folder, tmp_path):
    folder, _ = bench_folder
    csv_path, out = folder / "instances.csv", tmp_path / "never.csv"
    for options, match in [
        ({"solver": "cp-sat"}, "solver"),
        ({"timeout": 0}, "time_limit"),
        ({"attack_steps": -1}, "attack_steps"),
    ]:
        with pytest.raises(ValueError, match=match):
            vnncomp.run_benchmark(csv_path, out, **options)
        assert not out.exists()  # refused up front, not an "error" row per instance
    net = vnncomp.load_network(folder / "onnx/identity.onnx")
    with pytest.raises(ValueError, match="time_limit"):
        vnncomp.run_instance(net, folder / "vnnlib/robust.vnnlib", timeout=float("nan"))


def test_every_row_is_written_within_its_limit_when_the_bounds_overrun_it(tmp_path, monkeypatch):
    """A 1 s limit on a CNN whose bounds alone take longer: its worker is killed and replaced,
    the replacement is kept for the next instances, and every row is written within its limit
    + 1 s of handing the instance over."""
    csv_path = tmp_path / "slow/instances.csv"
    lines = make_slow_benchmark(csv_path.parent)
    handed, written, starts = [], [], []
    start, run = vnncomp._Worker.start, vnncomp._Worker.run

    def timed_start(self):
        start(self)
        starts.append(handed[-1])
        handed[-1] = time.perf_counter()  # starting a worker is not counted

    def timed_run(self, *args):
        handed.append(time.perf_counter())
        return run(self, *args)

    monkeypatch.setattr(vnncomp._Worker, "start", timed_start)
    monkeypatch.setattr(vnncomp._Worker, "run", timed_run)
    rows = vnncomp.run_benchmark(
        csv_path, tmp_path / "r.csv", progress=lambda *_: written.append(time.perf_counter())
    )
    overruns = [w - h - limit for h, w, (_, _, limit) in zip(handed, written, lines)]
    print(f"overruns past the limits: {', '.join(f'{o:.3f}' for o in overruns)} s")
    assert len(rows) == len(written) == len(lines)
    assert max(overruns) < 1.0, overruns
    assert rows[0]["result"] == "timeout" and 1.0 <= float(rows[0]["seconds"]) < 2.0, rows
    # the first worker was killed at limit + GRACE and its replacement kept, unless it answered
    # "timeout" itself (when loading the network took the whole limit, on a busy machine)
    killed = float(rows[0]["seconds"]) >= 1.0 + vnncomp.GRACE
    assert len(starts) == (2 if killed else 1), (starts, rows[0])
    assert [r["result"] for r in rows[1:]] == ["unsat", "unsat"]


def test_vnnlib_command_keeps_its_limit_and_reports_an_unreadable_network(tmp_path, capsys):
    folder = tmp_path / "slow"
    make_slow_benchmark(folder)
    argv = ["vnnlib", str(folder / "onnx/wide_cnn.onnx"), str(folder / "vnnlib/wide.vnnlib")]
    assert main([*argv, "--timeout", "1"]) == 0
    out, err = capsys.readouterr()
    assert out == "timeout\n"
    assert 1.0 <= float(re.search(r"timeout in ([0-9.]+) s", err).group(1)) < 2.0
    (folder / "onnx/erf.onnx").write_bytes(_unsupported_model())
    argv[1] = str(folder / "onnx/erf.onnx")
    assert main(argv) == 2
    assert "Erf" in capsys.readouterr().err


def _unsupported_model():
    """A network with an operator the importer does not read (Erf)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["y"])],
        "erf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("command", ["vnnlib", "vnncomp"])
def test_time_limit_and_solver_options_as_in_verify(command, tmp_path, monkeypatch, capsys):
    """--time-limit is the option's name, as in verify (--timeout, its old name, is a hidden
    alias); --solver takes verify's solvers and its default, the race."""
    from jaxcert import cli

    seen = []

    def run_isolated(onnx, vnnlib_path, **options):
        assert options.pop("strategy") == "auto" and options.pop("progress") is True
        seen.append(options)
        return jc.exact.PropertyResult("unsat", None, 0.1)

    def run_benchmark(instances, out, **options):
        assert options["strategy"] == "auto"
        seen.append({k: options[k] for k in ("timeout", "solver", "attack_steps", "seed")})
        return []

    monkeypatch.setattr(vnncomp, "run_isolated", run_isolated)
    monkeypatch.setattr(vnncomp, "run_benchmark", run_benchmark)
    monkeypatch.setattr(vnncomp, "read_instances", lambda path: [])
    monkeypatch.setattr(vnncomp, "summary_table", lambda figures: "")
    files = ["a.onnx", "b.vnnlib"] if command == "vnnlib" else ["instances.csv"]
    files = [str(tmp_path / f) for f in files]
    default = 60.0 if command == "vnnlib" else None  # vnncomp: the instances' own timeouts
    for argv, limit, solver in [
        ([], default, "race"),
        (["--time-limit", "7", "--solver", "scip"], 7.0, "scip"),
        (["--timeout", "7"], 7.0, "race"),
    ]:
        assert main([command, *files, *argv]) == 0
        assert seen.pop() == {"timeout": limit, "solver": solver, "attack_steps": 50, "seed": 0}
    helptext = cli.parser()._subparsers._group_actions[0].choices[command].format_help()
    assert "--time-limit" in helptext and "--timeout" not in helptext
    assert "{race,scip,highs}" in helptext
    capsys.readouterr()
