"""`jaxcert bench`: run the benchmark scripts, keep their JSON, and tabulate them in markdown.

The scripts live in the repository's `benchmarks/` folder (they are not installed with the
package); each prints one JSON document. A run stores every document under
`benchmarks/results/NAME-TIMESTAMP.json` and, only when asked (`update_readme`, the command's
`--update-readme`), rewrites the part of `benchmarks/README.md` between the markers
`<!-- jaxcert bench -->` and `<!-- /jaxcert bench -->` with one table per script, headed by the
machine and the library versions. A quick run (tiny sizes, the scripts run at once: a smoke
test) never rewrites that table.
"""

import datetime
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# name: (script, its arguments, its arguments with --quick)
SCRIPTS = {
    "smoothing": (
        "smoothing_throughput.py",
        [],
        ["--images", "2", "--num", "256", "--repeats", "1", "--models", "mlp_784_256_256_10"],
    ),
    "bounds": (
        "bounds_throughput.py",
        [],
        ["--images", "2", "--repeats", "1", "--methods", "ibp"],
    ),
    "exact": (
        "exact.py",
        ["--images", "10", "--time-limit", "20"],
        ["--images", "1", "--time-limit", "1", "--networks", "digits", "--solvers", "highs",
         "--eps", "0.02"],
    ),
}
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "ortools")
START, END = "<!-- jaxcert bench -->", "<!-- /jaxcert bench -->"


def run_script(directory: str | Path, name: str, quick: bool = False) -> dict[str, Any]:
    """Run one benchmark script; return its JSON document.

    Args:
      directory: the `benchmarks/` folder of a clone.
      name: which of `SCRIPTS` to run.
      quick: run it with tiny sizes (a smoke test).

    Returns:
      The JSON document the script printed, parsed.

    Raises:
      FileNotFoundError: the script is not in `directory`.
      RuntimeError: the script failed (with the end of its stderr).
    """
    return _finish(name, _start(directory, name, quick))


def _start(directory, name, quick):
    script, arguments, quick_arguments = SCRIPTS[name]
    path = Path(directory) / script
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run jaxcert bench from a clone of jaxcert")
    return subprocess.Popen(
        [sys.executable, str(path), *(quick_arguments if quick else arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(name, process):
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{SCRIPTS[name][0]} failed:\n{err[-2000:]}")
    return json.loads(out)


def versions() -> dict[str, str]:
    """Installed versions of the libraries jaxcert builds on.

    Returns:
      {library: version, or "not installed"} for each of `LIBRARIES`.
    """
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def smoothing_table(doc: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a `smoothing_throughput.py` JSON document.

    Args:
      doc: the parsed document.

    Returns:
      The table's lines.
    """
    rows = [
        [
            model,
            f"{r['fused']['evals_per_s']:,.0f}",
            f"{r['per_image_baseline']['evals_per_s']:,.0f}",
            f"{r['speedup_vs_per_image_baseline']:.2f}x",
            f"{r['roofline_fraction']:.2f}",
            f"{r['fused']['compile_s']:.2f}",
        ]
        for model, r in doc["results"].items()
    ]
    head = ["model", "noisy evals/s", "per-image loop evals/s", "speedup", "of roofline",
            "compile s"]  # fmt: skip
    return _table(head, rows)


def bounds_table(doc: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a `bounds_throughput.py` JSON document.

    Args:
      doc: the parsed document.

    Returns:
      The table's lines.
    """
    rows = [
        [model, method, f"{r['steady_s']:.4f}", f"{r['images_per_s']:,.1f}",
         f"{r['compile_s']:.2f}"]  # fmt: skip
        for model, methods in doc["results"].items()
        for method, r in methods.items()
        if isinstance(r, dict)
    ]
    return _table(["model", "method", f"s / {doc['images']} images", "images/s", "compile s"], rows)


def exact_table(doc: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a `exact.py` JSON document.

    Args:
      doc: the parsed document.

    Returns:
      The table's lines.
    """
    rows = []
    for network, by_eps in doc["results"].items():
        for eps, by_solver in by_eps.items():
            for solver, r in by_solver.items():
                speedup = r.get("median_speedup")
                rows.append(
                    [
                        network,
                        eps,
                        solver,
                        f"{r['verified']}/{r['falsified']}/{r['unknown']}",
                        f"{r['median_s']:.3f}",
                        f"{r['max_s']:.2f}",
                        "" if speedup is None else f"{speedup:.0f}x",
                    ]
                )
    head = ["network", "eps", "solver", "verified/falsified/unknown", "median s", "max s",
            "median speedup"]  # fmt: skip
    return _table(head, rows)


TABLES = {"smoothing": smoothing_table, "bounds": bounds_table, "exact": exact_table}


def markdown(
    documents: Mapping[str, Mapping[str, Any]], library_versions: Mapping[str, str]
) -> str:
    """The README section: machine, versions, and a table per benchmark.

    Args:
      documents: {name in `SCRIPTS`: its parsed JSON document}, at least one; the machine is
        read from the first.
      library_versions: {library: version}, as from `versions`.

    Returns:
      The section, between the `START` and `END` markers (included).
    """
    machine = next(iter(documents.values()))["machine"]
    lines = [
        START,
        f"Measured {datetime.date.today()} by `jaxcert bench` on {machine['cpu']} "
        f"({machine['cores']} cores), backend {machine['backend']} ({machine['device']}, "
        f"{machine['devices']} device(s)); "
        + ", ".join(f"{k} {v}" for k, v in library_versions.items())
        + ".",
    ]
    for name, doc in documents.items():
        lines += ["", f"**{name}** (`benchmarks/{SCRIPTS[name][0]}`)", ""]
        lines += TABLES[name](doc)
    lines.append(END)
    return "\n".join(lines)


def write_readme(readme: str | Path, section: str) -> None:
    """Replace the marked section of the README (or append it).

    Args:
      readme: the README file; created (as "# Benchmarks") if missing.
      section: the new section, as from `markdown`.

    Returns:
      None.
    """
    readme = Path(readme)
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Latest `jaxcert bench`\n\n" + section + "\n"
    readme.write_text(text)


def run(
    directory: str | Path = "benchmarks",
    names: Sequence[str] = tuple(SCRIPTS),
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    update_readme: bool = False,
) -> tuple[dict[str, Any], list[Path]]:
    """Run the chosen benchmarks, store their JSON and, on request, update the README's table.

    Args:
      directory: the `benchmarks/` folder of a clone.
      names: which of `SCRIPTS` to run.
      quick: tiny sizes, all scripts at once (a smoke test: its figures measure nothing).
      progress: optional `progress(name)` called as each script finishes.
      update_readme: rewrite the table in `directory/README.md` (refused with `quick`).

    Returns:
      (documents by name, paths of the JSON files written).
    """
    directory = Path(directory)
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")
    if quick and update_readme:
        raise ValueError("quick figures measure nothing: they never replace the README's table")
    for name in names:  # every script is there before any starts
        path = directory / SCRIPTS[name][0]
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run jaxcert bench from a clone of jaxcert")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = directory / "results"
    results.mkdir(parents=True, exist_ok=True)
    documents, paths = {}, []
    started = {name: _start(directory, name, quick) for name in names} if quick else {}
    for name in names:
        try:
            process = started.get(name) or _start(directory, name, quick)
            documents[name] = _finish(name, process)
        except BaseException:
            for other in started.values():
                other.kill()
                other.communicate()
            raise
        paths.append(results / f"{name}-{stamp}.json")
        paths[-1].write_text(json.dumps(documents[name], indent=2) + "\n")
        if progress is not None:
            progress(name)
    if update_readme:
        write_readme(directory / "README.md", markdown(documents, versions()))
    return documents, paths
