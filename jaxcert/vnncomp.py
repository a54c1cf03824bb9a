"""Running VNN-COMP benchmarks: ONNX networks, VNN-LIB properties, results and counterexamples.

A benchmark folder holds ``instances.csv`` with one instance per line, ``onnx,vnnlib,timeout``:
paths relative to the folder (possibly gzip-compressed, ``.gz``) and a time limit in seconds.
Each instance is decided by `jaxcert.exact.verify_property` and reported in VNN-COMP's words:
``unsat`` (the property holds), ``sat`` (with a counterexample), ``timeout`` or ``unknown``;
a benchmark run writes ``error`` for an instance it cannot read (an unsupported operator, a
property that does not fit the network) and goes on.

A benchmark run (`run_benchmark`, and `run_isolated` for one instance) keeps each instance's time
limit even where a compiled computation overruns it: the instances run in a worker process that
keeps the loaded network and JAX's compiled computations from one instance to the next, and that
is killed when an instance has not answered `GRACE` seconds after its limit (the row then says
``timeout``) and replaced before the next instance. An instance's time counts from the moment it
is handed to a ready worker: loading its network and reading its property are included, starting
a worker is not.

A counterexample is written in VNN-COMP's result-file format, the result on the first line and
then every input and output value::

    sat
    ((X_0 0.25)
     (X_1 -0.5)
     (Y_0 1.75))

References:
  VNN-COMP rules and benchmark layout, https://github.com/ChristopherBrix/vnncomp_benchmarks;
  VNN-LIB, https://www.vnnlib.org/.
"""

import csv
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._onnx import from_onnx
from ._table import ResumableTable
from .exact import PropertyResult, check_property_options, verify_property
from .graph import Network, trace
from .vnnlib import read_vnnlib

RESULT_COLUMNS = ("onnx", "vnnlib", "result", "seconds")
RESULTS = ("unsat", "sat", "timeout", "unknown", "error")
GRACE = 0.5  # seconds a worker may take past an instance's limit before it is killed


class Instance(NamedTuple):
    """One line of instances.csv: the paths as written there, and the time limit in seconds."""

    onnx: str
    vnnlib: str
    timeout: float


def load_network(path: str | Path) -> Network:
    """An ONNX network, traced for the bound methods (`jaxcert.from_onnx`, then `trace`).

    Args:
      path: the ``.onnx`` or ``.onnx.gz`` file.

    Returns:
      A `jaxcert.graph.Network` taking inputs of the ONNX input's shape without its batch axis.

    Raises:
      ValueError: an unsupported operator, or an input shape with unknown dimensions.
    """
    apply_fn, params = from_onnx(path)
    if None in apply_fn.input_shape:
        raise ValueError(f"{path}: the input shape {apply_fn.input_shape} is not fully known")
    return trace(apply_fn, params, np.zeros((1, *apply_fn.input_shape), np.float32))


def run_instance(net: Network, vnnlib_path: str | Path, *, timeout: float, solver: str = "race",
                 attack_steps: int = 50, seed: int = 0, strategy: str = "auto",
                 progress: bool = False) -> PropertyResult:  # fmt: skip
    """Decide one property file on a loaded network, in this process.

    The limit is kept between phases (`jaxcert.exact.verify_property`), not inside a compiled
    computation; `run_isolated` keeps it against those too.

    Args:
      net: the network (`load_network`).
      vnnlib_path: the ``.vnnlib`` or ``.vnnlib.gz`` file.
      timeout: seconds for the instance, reading the property included (> 0).
      solver, attack_steps, seed, strategy, progress: as in `jaxcert.exact.verify_property`.

    Returns:
      A `jaxcert.exact.PropertyResult`; its seconds include reading the property.

    Raises:
      ValueError: a bad option (before any work), or a property that does not fit the network.
    """
    check_property_options(solver, timeout, attack_steps, strategy)
    began = time.perf_counter()
    prop = read_vnnlib(vnnlib_path)
    left = timeout - (time.perf_counter() - began)
    if left <= 0:
        return PropertyResult("timeout", None, time.perf_counter() - began)
    result = verify_property(net, prop, solver=solver, time_limit=left, attack_steps=attack_steps,
                             seed=seed, strategy=strategy, progress=progress)  # fmt: skip
    return result._replace(seconds=time.perf_counter() - began)


def run_isolated(onnx_path: str | Path, vnnlib_path: str | Path, *, timeout: float,
                 solver: str = "race", attack_steps: int = 50, seed: int = 0,
                 strategy: str = "auto", progress: bool = False) -> PropertyResult:  # fmt: skip
    """Decide one instance in a worker process that is killed if it overruns the limit.

    Args:
      onnx_path: the ``.onnx`` or ``.onnx.gz`` file.
      vnnlib_path: the ``.vnnlib`` or ``.vnnlib.gz`` file.
      timeout: seconds for the instance, loading the network and reading the property included
        (> 0); the answer comes at most `GRACE` seconds after it.
      solver, attack_steps, seed, strategy, progress: as in `jaxcert.exact.verify_property`.

    Returns:
      A `jaxcert.exact.PropertyResult`.

    Raises:
      ValueError: a bad option (before any work), an unreadable network or property, or a
        property that does not fit the network.
    """
    check_property_options(solver, timeout, attack_steps, strategy)
    options = dict(solver=solver, attack_steps=attack_steps, seed=seed, strategy=strategy,
                   progress=progress)  # fmt: skip
    with _Worker() as worker:
        outcome = worker.run(Path(onnx_path), Path(vnnlib_path), timeout, options)
    if isinstance(outcome, _Failure):
        raise outcome.error()
    return outcome


def result_text(result: PropertyResult) -> str:
    """The VNN-COMP result file of a `PropertyResult`: the result, then any counterexample.

    Args:
      result: a `jaxcert.exact.PropertyResult`.

    Returns:
      The file's text: ``sat`` followed by ``((X_0 v) ... (Y_0 v))``, or the result alone.
    """
    lines = [result.result]
    if result.counterexample is not None:
        x, y = result.counterexample
        entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.ravel(x))]
        entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.ravel(y))]
        lines.append("(" + "\n ".join(entries) + ")")
    return "\n".join(lines) + "\n"


def read_instances(csv_path: str | Path) -> list[Instance]:
    """The instances of a benchmark's instances.csv, after checking that every file exists.

    Args:
      csv_path: the instances.csv file.

    Returns:
      A list of `Instance`, in file order.

    Raises:
      ValueError: a line that is not ``onnx,vnnlib,timeout`` with a timeout > 0, or no lines.
      FileNotFoundError: naming the missing files.
    """
    csv_path = Path(csv_path)
    instances = []
    with open(csv_path, newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not "".join(row).strip():
                continue
            try:
                onnx, vnnlib, timeout = (cell.strip() for cell in row)
                timeout = float(timeout)
            except ValueError:
                raise ValueError(
                    f"{csv_path}:{number}: expected 'onnx,vnnlib,timeout', got {row}"
                ) from None
            if not timeout > 0:
                raise ValueError(f"{csv_path}:{number}: the timeout must be > 0, got {timeout}")
            instances.append(Instance(onnx, vnnlib, timeout))
    if not instances:
        raise ValueError(f"{csv_path} lists no instances")
    folder = csv_path.parent
    missing = sorted(
        {p for i in instances for p in (i.onnx, i.vnnlib) if not (folder / p).is_file()}
    )
    if missing:
        raise FileNotFoundError(f"files listed in {csv_path} are missing: {', '.join(missing)}")
    return instances


def run_benchmark(
    csv_path: str | Path,
    results_path: str | Path,
    *,
    timeout: float | None = None,
    solver: str = "race",
    attack_steps: int = 50,
    seed: int = 0,
    strategy: str = "auto",
    counterexamples: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[Instance, str, str], None] | None = None,
) -> list[dict[str, str]]:
    """Run every instance of a benchmark folder, one results row written per instance.

    Args:
      csv_path: the folder's instances.csv.
      results_path: the results CSV (onnx, vnnlib, result, seconds), written row by row; with
        `resume`, the instances already in it are skipped.
      timeout: seconds per instance instead of the ones in instances.csv.
      solver, attack_steps, seed, strategy: as in `jaxcert.exact.verify_property`.
      counterexamples: a folder for the result files of ``sat`` instances, or None.
      resume: continue an existing results file (its settings must match).
      progress: called as ``progress(instance, result, message)`` after each instance.

    Returns:
      The results rows, as dicts of strings.

    Raises:
      ValueError: a bad option or instances.csv, before any instance runs (an instance that
        cannot be read, or whose worker dies, later gets an "error" row instead).
    """
    check_property_options(solver, timeout, attack_steps, strategy)
    instances = read_instances(csv_path)
    folder = Path(csv_path).parent
    settings = {
        "instances": str(Path(csv_path).resolve()),
        "timeout": timeout,
        "solver": solver,
        "attack_steps": attack_steps,
        "seed": seed,
        "strategy": strategy,
    }
    if counterexamples is not None:
        Path(counterexamples).mkdir(parents=True, exist_ok=True)
    options = dict(solver=solver, attack_steps=attack_steps, seed=seed, strategy=strategy)
    with (
        ResumableTable(
            results_path, RESULT_COLUMNS, settings, resume=resume, delimiter=",", keys=2
        ) as table,
        _Worker() as worker,
    ):
        for instance in instances:
            if (instance.onnx, instance.vnnlib) in table.done:
                continue
            limit = timeout if timeout is not None else instance.timeout
            outcome = worker.run(folder / instance.onnx, folder / instance.vnnlib, limit, options)
            message = ""
            if isinstance(outcome, _Failure):
                if not issubclass(outcome.kind, (ValueError, WorkerDied)):
                    raise outcome.error()  # a failure of jaxcert, not of this instance
                message = outcome.message  # this instance failed; the others still run
            if outcome.result == "sat" and counterexamples is not None:
                name = f"{_stem(instance.onnx)}__{_stem(instance.vnnlib)}.counterexample"
                (Path(counterexamples) / name).write_text(result_text(outcome))
            table.write(
                {
                    "onnx": instance.onnx,
                    "vnnlib": instance.vnnlib,
                    "result": outcome.result,
                    "seconds": f"{outcome.seconds:.3f}",
                }
            )
            if progress is not None:
                progress(instance, outcome.result, message)
        return table.rows()


def summary(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Counts of each result and seconds of benchmark result rows, in all and per network.

    Args:
      rows: results rows (`run_benchmark`).

    Returns:
      A dict: "instances", one count per result in `RESULTS`, "seconds", and "networks"
      mapping each ONNX path to the same figures for its instances.
    """

    def figures(subset):
        counts = {r: sum(row["result"] == r for row in subset) for r in RESULTS}
        seconds = round(sum(float(row["seconds"]) for row in subset), 3)
        return {"instances": len(subset), **counts, "seconds": seconds}

    networks = {}
    for row in rows:
        networks.setdefault(row["onnx"], []).append(row)
    return {**figures(rows), "networks": {k: figures(v) for k, v in networks.items()}}


def summary_table(figures: Mapping[str, Any]) -> str:
    """A markdown table of `summary`: one row per network and a total.

    Args:
      figures: the dict `summary` returns.

    Returns:
      The table as a string.
    """
    columns = ["instances", *RESULTS, "seconds"]
    lines = ["| network | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in [*figures["networks"].items(), ("all", figures)]:
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _stem(path):
    name = Path(path).name
    for suffix in (".gz", ".onnx", ".vnnlib"):
        name = name.removesuffix(suffix)
    return name


class WorkerDied(RuntimeError):
    """The worker process deciding an instance died (e.g. killed for its memory)."""


class _Failure(NamedTuple):
    """An instance that raised in the worker: the exception's type, message and duration."""

    kind: type
    message: str
    seconds: float
    result: str = "error"

    def error(self):
        return self.kind(self.message)


# The exceptions a worker reports as themselves; any other is reported as a RuntimeError.
_REPORTED = (
    FileNotFoundError,
    ValueError,
    TypeError,
    OSError,
    ImportError,
    MemoryError,
    RuntimeError,
)


class _Worker:
    """A process that runs instances one at a time (`_serve`), started on first use, killed and
    replaced when an instance overruns its limit; use as a context manager (POSIX only)."""

    def __init__(self):
        self.process, self.connection = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        """Start the worker and wait until it has imported jaxcert (not counted in any limit)."""
        ours, theirs = multiprocessing.Pipe()
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        code = f"from jaxcert.vnncomp import _serve; _serve({theirs.fileno()}, {os.getpid()})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # solvers print diagnostics there; stderr stays shared
            env=env,
        )
        theirs.close()
        self.connection = ours
        try:
            self.connection.recv()  # "ready"
        except EOFError:
            code = self.process.wait()
            self.process, self.connection = None, None
            raise RuntimeError(f"the vnncomp worker exited with code {code} at start") from None

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.connection.close()
        self.process, self.connection = None, None

    def run(self, onnx_path, vnnlib_path, limit, options):
        """A `PropertyResult` (seconds: from hand-over to answer) or a `_Failure`; "timeout"
        when the worker has not answered GRACE seconds after `limit` (it is then killed)."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        began = time.perf_counter()
        self.connection.send((str(onnx_path), str(vnnlib_path), limit, options))
        answered = self.connection.poll(limit + GRACE)
        try:
            reply = self.connection.recv() if answered else None
        except EOFError:  # the worker died, e.g. killed for its memory
            code = self.process.wait()
            reply = _Failure(WorkerDied, f"the vnncomp worker died (exit code {code})", 0.0)
        seconds = time.perf_counter() - began
        if reply is None or self.process.poll() is not None:
            self.stop()  # a fresh worker starts with the next instance
        if reply is None:
            return PropertyResult("timeout", None, seconds)
        return reply._replace(seconds=seconds)


def _serve(fd, parent):
    """The worker loop: read (onnx, vnnlib, limit, options), decide the instance, reply."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    connection = Connection(fd)
    connection.send("ready")
    loaded = (None, None)  # instances of one network usually follow each other
    while True:
        try:
            onnx_path, vnnlib_path, limit, options = connection.recv()
        except EOFError:
            return
        began = time.perf_counter()
        try:
            if loaded[0] != onnx_path:
                loaded = (None, None)  # free the previous network first
                loaded = (onnx_path, load_network(onnx_path))
            left = limit - (time.perf_counter() - began)
            if left > 0:
                reply = run_instance(loaded[1], vnnlib_path, timeout=left, **options)
            else:
                reply = PropertyResult("timeout", None, 0.0)
        except Exception as error:
            kind = next((k for k in _REPORTED if isinstance(error, k)), None)
            message = str(error) if kind else f"{type(error).__name__}: {error}"
            reply = _Failure(kind or RuntimeError, message, 0.0)
        connection.send(reply)


def _die_with(parent):
    """Have the kernel kill this process when its parent dies (Linux), and exit at once if the
    parent has already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
