"""Race SCIP against HiGHS on one MILP query; the first decisive answer wins.

OR-Tools' solve interrupter does not stop SCIP or HiGHS promptly in this build, so each solver
runs in a worker process (this file run as a script: it imports OR-Tools only, not JAX) that
receives the model as a MathOpt proto and returns the result proto. When one solver settles the
query, the other worker is killed and a fresh one is started for the next query.
"""

import datetime
import os
import pickle
import select
import struct
import subprocess
import sys

from ortools.math_opt import model_pb2, result_pb2
from ortools.math_opt.python import mathopt

SOLVERS = ("scip", "highs")
SOLVER_TYPES = {
    "scip": mathopt.SolverType.GSCIP,
    "highs": mathopt.SolverType.HIGHS,
    "glop": mathopt.SolverType.GLOP,
}


def solve_parameters(solver, time_limit, threads, search):
    """MathOpt parameters: a time limit, threads (SCIP), and for search="decide" a stop at the
    first solution (`solution_limit=1` for SCIP, `mip_max_improving_sols=1` for HiGHS)."""
    params = mathopt.SolveParameters(
        time_limit=None if time_limit is None else datetime.timedelta(seconds=time_limit),
        threads=threads if solver == "scip" else None,  # HiGHS refuses the option
    )
    if search == "decide":
        if solver == "highs":
            params.highs.int_options["mip_max_improving_sols"] = 1
        else:
            params.solution_limit = 1
    return params


def _send(stream, value):
    data = pickle.dumps(value)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the worker closed its pipe")
    return pickle.loads(stream.read(struct.unpack("<Q", head)[0]))


class _Worker:
    """One solver process, started at the first query; once stopped, a replacement starts at
    once, so that it has loaded OR-Tools by the next query."""

    def __init__(self, solver):
        self.solver, self.process = solver, None

    def _spawn(self):
        return subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.solver],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def start(self, query):
        if self.process is None or self.process.poll() is not None:
            self.process = self._spawn()
        _send(self.process.stdin, query)

    def stop(self, replace=True):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = self._spawn() if replace else None


def _decisive(result, search):
    if result.termination.reason == mathopt.TerminationReason.INFEASIBLE:
        return True
    if search == "decide":
        return result.has_primal_feasible_solution()
    return result.termination.reason == mathopt.TerminationReason.OPTIMAL


class Race:
    """SCIP and HiGHS workers; use as a context manager so that the workers end with it.

    POSIX only: it waits on the workers' pipes with `select`.
    """

    def __init__(self):
        self.workers = [_Worker(s) for s in SOLVERS]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for worker in self.workers:
            worker.stop(replace=False)

    def solve(self, model, time_limit, threads, search):
        """Solve `model` (objective and constraints set) on both solvers; return the first
        decisive `SolveResult` (or, when neither is, the one with the better dual bound) and
        the name of the solver that gave it."""
        proto = model.export_model().SerializeToString()
        for worker in self.workers:
            worker.start((proto, time_limit, threads, search))
        pending = {w.process.stdout.fileno(): w for w in self.workers}
        results = []
        while pending:
            ready, _, _ = select.select(list(pending), [], [])
            for fd in ready:
                worker = pending.pop(fd)
                reply = _receive(worker.process.stdout)
                if isinstance(reply, str):
                    raise RuntimeError(f"{worker.solver} failed: {reply}")
                reply = result_pb2.SolveResultProto.FromString(reply)
                result = mathopt.parse_solve_result(reply, model, validate=False)
                results.append((result, worker.solver))
                if _decisive(result, search):
                    for other in pending.values():
                        other.stop()
                    return result, worker.solver
        return max(results, key=lambda r: _dual(r[0]))


def _dual(result):
    return result.termination.objective_bounds.dual_bound


def _serve(solver):
    """The worker loop: read (model proto, time limit, threads, search), solve, reply."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            proto, time_limit, threads, search = _receive(stdin)
        except EOFError:
            return
        try:
            model = mathopt.Model.from_model_proto(model_pb2.ModelProto.FromString(proto))
            params = solve_parameters(solver, time_limit, threads, search)
            result = mathopt.solve(model, SOLVER_TYPES[solver], params=params)
            _send(stdout, result.to_proto().SerializeToString())
        except Exception as err:  # reported to the parent, which raises it
            _send(stdout, f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    _serve(sys.argv[1])
