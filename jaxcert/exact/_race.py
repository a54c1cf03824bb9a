"""Race SCIP against HiGHS on one MILP query; the first decisive answer wins.

OR-Tools' solve interrupter does not stop SCIP or HiGHS promptly in this build, so each solver
runs in a worker process (this file run as a script: it imports OR-Tools only, not JAX) that
receives the model as a MathOpt proto and returns the result proto. When one solver settles the
query, the other worker is killed and a fresh one is started for the next query.

The worker talks to the parent over two private pipes, never over its stdin and stdout: solver
libraries print diagnostics on file descriptor 1, which the worker points at /dev/null. Every
message is framed by a magic number and its length, and the parent refuses a frame that does not
start with them. A worker dies with the process that started it (Linux parent-death signal),
and exits when its request pipe closes.
"""

import ctypes
import datetime
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time

from ortools.math_opt import model_pb2, result_pb2
from ortools.math_opt.python import mathopt

SOLVERS = ("scip", "highs")
SOLVER_TYPES = {
    "scip": mathopt.SolverType.GSCIP,
    "highs": mathopt.SolverType.HIGHS,
    "glop": mathopt.SolverType.GLOP,
}
# A solver's own time limit is the query's less this much (at most a quarter of it), kept for it
# to overrun its limit a little and send its answer; at the query's limit the parent kills the
# workers that have not answered.
GRACE = 0.5
_MAGIC = b"JXCR"
_HEAD = struct.Struct("<4sQ")
_MAX_FRAME = 1 << 36  # 64 GiB: any larger length is a corrupt header
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_CHUNK = 4096  # bytes per write when a send has a deadline: a pipe with room takes them at once


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


def solve_here(model, solver, time_limit, threads, search):
    """Solve `model` in this process (`solve_parameters`' options), with what the solver prints
    on fd 1 sent to /dev/null: HiGHS leaves debug lines there ("HighsMipSolverData::..."), in
    the user's output. Output of other threads to fd 1 during the solve is lost too."""
    params = solve_parameters(solver, time_limit, threads, search)
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (a daemon): nothing to keep clean
        return mathopt.solve(model, SOLVER_TYPES[solver], params=params)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        return mathopt.solve(model, SOLVER_TYPES[solver], params=params)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _send(fd, value, deadline=None):
    """Write `value` as one frame. With a `deadline` (time.monotonic()), raise TimeoutError
    there instead of blocking: a pipe holds 64 KiB, and a model larger than that waits for the
    worker to read it, which a worker still importing OR-Tools does only seconds later."""
    data = pickle.dumps(value)
    view = memoryview(_HEAD.pack(_MAGIC, len(data)) + data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError
        view = view[os.write(fd, view[:_CHUNK] if deadline is not None else view) :]


def _read(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 24))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(fd, sender):
    """One framed message from `fd`; `sender` names the other end in errors."""
    head = _read(fd, _HEAD.size)
    magic, size = _HEAD.unpack(head)
    if magic != _MAGIC or size > _MAX_FRAME:
        raise RuntimeError(
            f"the {sender} sent a malformed message (it starts {head!r}, not a jaxcert frame)"
        )
    return pickle.loads(_read(fd, size))


class _Worker:
    """One solver process, started at the first query; once stopped, a replacement starts at
    once, so that it has loaded OR-Tools by the next query."""

    def __init__(self, solver):
        self.solver, self.process = solver, None

    def command(self, request, reply):
        """The worker's command line, given the fds of its request and reply pipes."""
        return [sys.executable, os.path.abspath(__file__), self.solver, str(os.getpid()),
                str(request), str(reply)]  # fmt: skip

    def _spawn(self):
        (request, self.requests), (self.replies, reply) = os.pipe(), os.pipe()
        try:
            self.process = subprocess.Popen(
                self.command(request, reply),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(request, reply),
            )
        finally:
            os.close(request)
            os.close(reply)

    def start(self, query, deadline):
        """Send the query; TimeoutError if the worker has not taken it by the deadline."""
        if self.process is None or self.process.poll() is not None:
            self.stop(replace=True)
        try:
            _send(self.requests, query, deadline)
        except BrokenPipeError:
            raise RuntimeError(
                f"the {self.solver} worker ended (exit code {self.process.wait()})"
            ) from None

    def receive(self):
        try:
            return _receive(self.replies, f"{self.solver} worker")
        except EOFError:
            code = self.process.wait()
            raise RuntimeError(
                f"the {self.solver} worker ended without answering (exit code {code})"
            ) from None

    def stop(self, replace=True):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            os.close(self.requests)
            os.close(self.replies)
            self.process = None
        if replace:
            self._spawn()


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
        """Solve `model` (objective and constraints set) on both solvers.

        Returns:
          (result, solver): the first decisive `SolveResult` and the name of the solver that
          gave it; when neither is decisive, the answer with the better dual bound; when no
          answer came within time_limit seconds, (None, None) (the workers still running are
          then killed and replaced).

        Raises:
          RuntimeError: a worker failed, ended, or sent a malformed message.
        """
        deadline = time.monotonic() + time_limit
        proto = model.export_model().SerializeToString()
        own_limit = time_limit - min(GRACE, time_limit / 4)
        pending = {}
        for worker in self.workers:
            try:
                worker.start((proto, own_limit, threads, search), deadline)
                pending[worker.replies] = worker
            except TimeoutError:  # a part of the query is in the pipe: this worker is spent
                worker.stop()
        results = []
        while pending:
            ready, _, _ = select.select(list(pending), [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                for worker in pending.values():
                    worker.stop()
                break
            for fd in ready:
                worker = pending.pop(fd)
                reply = worker.receive()
                if isinstance(reply, str):
                    raise RuntimeError(f"{worker.solver} failed: {reply}")
                reply = result_pb2.SolveResultProto.FromString(reply)
                result = mathopt.parse_solve_result(reply, model, validate=False)
                results.append((result, worker.solver))
                if _decisive(result, search):
                    for other in pending.values():
                        other.stop()
                    return result, worker.solver
        if not results:
            return None, None
        return max(results, key=lambda r: _dual(r[0]))


def _dual(result):
    return result.termination.objective_bounds.dual_bound


def _die_with(parent):
    """End this process when `parent` ends (Linux), or now if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def _serve(solver, parent, requests, replies):
    """The worker loop: read (model proto, time limit, threads, search), solve, reply."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # solver diagnostics printed on fd 1 go nowhere
    os.close(devnull)
    while True:
        try:
            proto, time_limit, threads, search = _receive(requests, "parent")
        except EOFError:
            return
        try:
            model = mathopt.Model.from_model_proto(model_pb2.ModelProto.FromString(proto))
            params = solve_parameters(solver, time_limit, threads, search)
            result = mathopt.solve(model, SOLVER_TYPES[solver], params=params)
            _send(replies, result.to_proto().SerializeToString())
        except Exception as err:  # reported to the parent, which raises it
            _send(replies, f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    _serve(sys.argv[1], *map(int, sys.argv[2:]))
