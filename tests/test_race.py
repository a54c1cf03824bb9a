"""The SCIP/HiGHS race: answers, a result channel that solver output cannot corrupt, and
workers that never outlive the process that started them."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest
from ortools.math_opt.python import mathopt
from test_exact import mlp_apply, random_mlp

import jaxcert as jc
from jaxcert.exact import _race
from jaxcert.exact._race import Race

COMMAND = _race._Worker.command


def no_solution_model():
    """2 (x0 + x1 + x2) = 7 over integers: infeasible, proved at once by both solvers."""
    model = mathopt.Model()
    x = [model.add_integer_variable(lb=0, ub=10) for _ in range(3)]
    equation = model.add_linear_constraint(2 * x[0] + 2 * x[1] + 2 * x[2] == 7)
    model.objective.set_to_expression(x[0])
    return model, equation


def hard_model():
    """A market split instance (Cornuejols and Dawande 1998): 4 equations over 40 binaries,
    which neither solver settles within minutes."""
    a = np.random.default_rng(0).integers(0, 100, (4, 40))
    model = mathopt.Model()
    x = [model.add_binary_variable() for _ in range(a.shape[1])]
    for row in a:
        terms = mathopt.fast_sum(int(c) * v for c, v in zip(row, x))
        model.add_linear_constraint(terms == int(row.sum()) // 2)
    return model


def test_race_returns_the_first_decisive_answer_and_stops_the_other_solver():
    model, equation = no_solution_model()
    with Race() as race:
        result, _ = race.solve(model, 10.0, None, "minimum")
        assert result.termination.reason == mathopt.TerminationReason.INFEASIBLE
        equation.lower_bound = equation.upper_bound = 8
        result, solver = race.solve(model, 10.0, None, "minimum")
        assert result.termination.reason == mathopt.TerminationReason.OPTIMAL
        assert result.objective_value() == pytest.approx(0.0) and solver in ("scip", "highs")
        processes = [w.process for w in race.workers]
    assert all(p.poll() is not None for p in processes)  # no worker outlives the race
    with Race() as race:
        assert all(w.process is None for w in race.workers)  # started only when needed


def wrapped(monkeypatch, tmp_path, body):
    """Run the race's workers through a script that executes `body` (with `race_path`, the
    worker's argv and `libc` defined) before it serves as a normal worker."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import ctypes, runpy, sys\n"
        "race_path, argv = sys.argv[1], sys.argv[1:]\n"
        "libc = ctypes.CDLL(None)\n"
        + textwrap.dedent(body)
        + "sys.argv = argv\nrunpy.run_path(race_path, run_name='__main__')\n"
    )

    def through_script(self, request, reply):
        python, *rest = COMMAND(self, request, reply)
        return [python, str(script), *rest]

    monkeypatch.setattr(_race._Worker, "command", through_script)


def test_solver_output_on_fd_1_does_not_reach_the_parent(monkeypatch, tmp_path):
    # What a solver library does when it prints diagnostics: write(2) on fd 1, from C.
    wrapped(
        monkeypatch,
        tmp_path,
        """
        from ortools.math_opt.python import mathopt
        solve = mathopt.solve
        def noisy(*args, **kwargs):
            junk = b"Running HiGHS 1.11.0: Copyright (c) 2025 HiGHS under MIT licence terms\\n"
            libc.write(1, junk, len(junk))
            return solve(*args, **kwargs)
        mathopt.solve = noisy
        junk = b"WARNING: printed before the first query\\n"
        libc.write(1, junk, len(junk))
        """,
    )
    model, equation = no_solution_model()
    with Race() as race:
        for _ in range(2):
            result, _ = race.solve(model, 10.0, None, "decide")
            assert result.termination.reason == mathopt.TerminationReason.INFEASIBLE


@pytest.mark.parametrize("mode", [pytest.param("decide", marks=pytest.mark.slow), "minimum"])
def test_the_margins_do_not_depend_on_which_solver_wins(monkeypatch, tmp_path, mode):
    params = random_mlp(2, (3, 8, 8, 3))
    x = jnp.asarray(np.random.default_rng(10).uniform(0.2, 0.8, (5, 3)), jnp.float32)
    y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
    net = jc.trace(mlp_apply, params, x[:1])
    answers = []
    for slow in ("scip", "highs"):  # each solver held back in turn, so that the other wins
        wrapped(
            monkeypatch,
            tmp_path,
            f"""
            import time
            from ortools.math_opt.python import mathopt
            solve = mathopt.solve
            def held_back(*args, **kwargs):
                time.sleep(0.5 if argv[1] == {slow!r} else 0.0)
                return solve(*args, **kwargs)
            mathopt.solve = held_back
            """,
        )
        results = jc.exact.verify(net, jc.LinfBall(x, 0.2), y, attack_steps=0, mode=mode,
                                  strategy="milp")  # fmt: skip
        answers.append([(r.status, r.margin_lower, r.margin_upper, r.binaries) for r in results])
    assert answers[0] == answers[1]
    decided = {status for status, *_, binaries in answers[0] if binaries}
    assert decided == {"verified", "falsified"}  # by MILPs


def test_a_malformed_reply_is_a_clear_error(monkeypatch, tmp_path):
    wrapped(
        monkeypatch,
        tmp_path,
        """
        import os
        os.write(int(argv[-1]), b"Presolving model\\n" * 4)
        """,
    )
    with Race() as race, pytest.raises(RuntimeError, match="malformed message"):
        race.solve(no_solution_model()[0], 10.0, None, "decide")


def test_a_worker_that_dies_is_a_clear_error(monkeypatch, tmp_path):
    wrapped(monkeypatch, tmp_path, "import os\nos._exit(3)\n")
    with Race() as race, pytest.raises(RuntimeError, match="ended.*exit code 3"):
        race.solve(no_solution_model()[0], 10.0, None, "decide")


def test_the_race_keeps_its_deadline():
    began = time.monotonic()
    with Race() as race:
        result, _ = race.solve(hard_model(), 1.0, None, "decide")
        took = time.monotonic() - began
        assert result is None or not _race._decisive(result, "decide")
        result, _ = race.solve(no_solution_model()[0], 10.0, None, "decide")  # replaced workers
        assert result.termination.reason == mathopt.TerminationReason.INFEASIBLE
    assert took <= 1.0 + 0.25, took  # the pipes and a kill take milliseconds


def test_a_query_larger_than_a_pipe_keeps_the_deadline_while_the_workers_start(monkeypatch,
                                                                              tmp_path):
    # A worker still loading OR-Tools (here: sleeping 3 s first) does not read its requests,
    # and a pipe holds 64 KiB: sending a larger model must not hold the race past its limit.
    wrapped(monkeypatch, tmp_path, "import time\ntime.sleep(3)\n")
    model = mathopt.Model()
    x = [model.add_variable(lb=0, ub=1) for _ in range(20000)]
    model.add_linear_constraint(mathopt.fast_sum(x) >= 1)
    model.objective.set_to_expression(mathopt.fast_sum(x))
    assert len(model.export_model().SerializeToString()) > 2 * 65536
    with Race() as race:
        began = time.monotonic()
        assert race.solve(model, 1.0, None, "minimum") == (None, None)
        took = time.monotonic() - began
        result, _ = race.solve(model, 20.0, None, "minimum")  # the replaced workers answer
        assert result.objective_value() == pytest.approx(1.0)
    assert took <= 1.0 + 0.25, took


def test_a_worker_exits_when_its_request_pipe_closes():
    worker = _race._Worker("highs")
    worker.stop(replace=True)  # starts it
    os.close(worker.requests)
    assert worker.process.wait(timeout=20) == 0
    os.close(worker.replies)


def children(pid):
    """Processes whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid):
    """Whether `pid` runs (a zombie is dead: killed, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


RACE_PARENT = """
import importlib.util
from ortools.math_opt import model_pb2
from ortools.math_opt.python import mathopt
spec = importlib.util.spec_from_file_location("race", {race!r})
race = importlib.util.module_from_spec(spec)
spec.loader.exec_module(race)
with open({model!r}, "rb") as f:
    proto = model_pb2.ModelProto.FromString(f.read())
with race.Race() as r:
    r.solve(mathopt.Model.from_model_proto(proto), 120.0, None, "decide")
"""
VERIFY_PARENT = """
import sys
sys.path.insert(0, {tests!r})
import jax.numpy as jnp, numpy as np, jaxcert as jc
from test_exact import mlp_apply, random_mlp
params = random_mlp(0, (10, 40, 40, 10))  # its MILPs take minutes (test_exact)
x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (2, 10)), jnp.float32)
y = np.asarray(jnp.argmax(mlp_apply(params, x), axis=1))
net = jc.trace(mlp_apply, params, x[:1])
options = dict(bounds="ibp", attack_steps=0, mode="minimum", time_limit=120, strategy="milp")
jc.exact.verify(net, jc.LinfBall(x, 0.3), y, **options)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
@pytest.mark.parametrize(
    "script",
    [RACE_PARENT, pytest.param(VERIFY_PARENT, marks=pytest.mark.slow)],
    ids=["race", "verify"],
)
def test_workers_die_with_their_parent_when_it_is_killed_during_a_solve(tmp_path, script):
    # The race's parent imports no JAX, so that it reaches the solve in about a second.
    model = tmp_path / "model.pb"
    model.write_bytes(hard_model().export_model().SerializeToString())
    code = script.format(race=_race.__file__, model=str(model), tests=os.path.dirname(__file__))
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
            workers = children(parent.pid)
        assert len(workers) == 2, f"the race did not start its workers: {workers}"
        time.sleep(1.0)  # both workers past start-up, solving
        assert all(alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(2.0)
        survivors = [pid for pid in workers if alive(pid)]
        for pid in survivors:  # clean up before failing
            os.kill(pid, signal.SIGKILL)
        assert not survivors, "race workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_in_process_solves_leave_the_users_stdout_clean(monkeypatch, capfd):
    # HiGHS in-process printed "HighsMipSolverData::transformNewIntegerFeasibleSolution
    # tmpSolver.run();" into the user's output (the soundness harness's JSON, for one).
    def noisy(*args, **kwargs):
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
        return "result"

    monkeypatch.setattr(_race.mathopt, "solve", noisy)
    assert _race.solve_here(no_solution_model()[0], "highs", 1.0, None, "minimum") == "result"
    print("the user's line")
    assert capfd.readouterr().out == "the user's line\n"


def test_a_process_without_fd_1_still_solves(monkeypatch):
    def closed(fd):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(_race.os, "dup", closed)
    result = _race.solve_here(no_solution_model()[0], "highs", 10.0, None, "minimum")
    assert result.termination.reason == mathopt.TerminationReason.INFEASIBLE
