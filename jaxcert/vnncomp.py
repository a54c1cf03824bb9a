"""Running VNN-COMP benchmarks: ONNX networks, VNN-LIB properties, results and counterexamples.

A benchmark folder holds ``instances.csv`` with one instance per line, ``onnx,vnnlib,timeout``:
paths relative to the folder (possibly gzip-compressed, ``.gz``) and a time limit in seconds.
Each instance is decided by `jaxcert.exact.verify_property` and reported in VNN-COMP's words:
``unsat`` (the property holds), ``sat`` (with a counterexample), ``timeout`` or ``unknown``;
a benchmark run writes ``error`` for an instance it cannot read (an unsupported operator, a
property that does not fit the network) and goes on.

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
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._onnx import from_onnx
from ._table import ResumableTable
from .exact import verify_property
from .exact._property import check_options
from .graph import trace
from .vnnlib import read_vnnlib

RESULT_COLUMNS = ("onnx", "vnnlib", "result", "seconds")
RESULTS = ("unsat", "sat", "timeout", "unknown", "error")


class Instance(NamedTuple):
    """One line of instances.csv: the paths as written there, and the time limit in seconds."""

    onnx: str
    vnnlib: str
    timeout: float


def load_network(path):
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


def run_instance(net, vnnlib_path, *, timeout, solver="highs", attack_steps=50, seed=0):
    """Decide one property file on a loaded network (see `jaxcert.exact.verify_property`).

    Args:
      net: the network (`load_network`).
      vnnlib_path: the ``.vnnlib`` or ``.vnnlib.gz`` file.
      timeout: seconds for the instance, reading the property included (> 0).
      solver, attack_steps, seed: as in `jaxcert.exact.verify_property`.

    Returns:
      A `jaxcert.exact.PropertyResult`; its seconds include reading the property.

    Raises:
      ValueError: a bad option (before any work), or a property that does not fit the network.
    """
    check_options(solver, timeout, attack_steps)
    began = time.perf_counter()
    prop = read_vnnlib(vnnlib_path)
    left = max(timeout - (time.perf_counter() - began), 1e-3)
    result = verify_property(
        net, prop, solver=solver, time_limit=left, attack_steps=attack_steps, seed=seed
    )
    return result._replace(seconds=time.perf_counter() - began)


def result_text(result):
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


def read_instances(csv_path):
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
    csv_path,
    results_path,
    *,
    timeout=None,
    solver="highs",
    attack_steps=50,
    seed=0,
    counterexamples=None,
    resume=False,
    progress=None,
):
    """Run every instance of a benchmark folder, one results row written per instance.

    Args:
      csv_path: the folder's instances.csv.
      results_path: the results CSV (onnx, vnnlib, result, seconds), written row by row; with
        `resume`, the instances already in it are skipped.
      timeout: seconds per instance instead of the ones in instances.csv.
      solver, attack_steps, seed: as in `jaxcert.exact.verify_property`.
      counterexamples: a folder for the result files of ``sat`` instances, or None.
      resume: continue an existing results file (its settings must match).
      progress: called as ``progress(instance, result, message)`` after each instance.

    Returns:
      The results rows, as dicts of strings.

    Raises:
      ValueError: a bad option or instances.csv, before any instance runs (an instance that
        cannot be read later gets an "error" row instead).
    """
    check_options(solver, timeout, attack_steps)
    instances = read_instances(csv_path)
    folder = Path(csv_path).parent
    settings = {
        "instances": str(Path(csv_path).resolve()),
        "timeout": timeout,
        "solver": solver,
        "attack_steps": attack_steps,
        "seed": seed,
    }
    if counterexamples is not None:
        Path(counterexamples).mkdir(parents=True, exist_ok=True)
    loaded = (None, None)  # instances of one network usually follow each other
    with ResumableTable(
        results_path, RESULT_COLUMNS, settings, resume=resume, delimiter=",", keys=2
    ) as table:
        for instance in instances:
            if (instance.onnx, instance.vnnlib) in table.done:
                continue
            began, message = time.perf_counter(), ""
            try:
                if loaded[0] != instance.onnx:
                    loaded = (instance.onnx, load_network(folder / instance.onnx))
                limit = timeout if timeout is not None else instance.timeout
                outcome = run_instance(
                    loaded[1],
                    folder / instance.vnnlib,
                    timeout=limit,
                    solver=solver,
                    attack_steps=attack_steps,
                    seed=seed,
                )
                result, seconds = outcome.result, outcome.seconds
            except ValueError as error:  # this instance cannot be read; the others still run
                result, seconds, message = "error", time.perf_counter() - began, str(error)
            if result == "sat" and counterexamples is not None:
                name = f"{_stem(instance.onnx)}__{_stem(instance.vnnlib)}.counterexample"
                (Path(counterexamples) / name).write_text(result_text(outcome))
            table.write(
                {
                    "onnx": instance.onnx,
                    "vnnlib": instance.vnnlib,
                    "result": result,
                    "seconds": f"{seconds:.3f}",
                }
            )
            if progress is not None:
                progress(instance, result, message)
        return table.rows()


def summary(rows):
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


def summary_table(figures):
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
