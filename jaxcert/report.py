"""Tables and plots of jaxcert's result files (the TSVs of `jaxcert certify`, `predict`, `verify`).

A certify file follows Cohen et al.'s columns (idx, label, predict, radius, correct, ...): its
certified accuracy at radius r is the fraction of rows with correct == 1 and radius >= r. A
verify file has a status per image: its verified accuracy is the fraction of rows whose status
is "verified" and whose prediction is the label. A predict file gives the smoothed classifier's
accuracy and its abstentions. The run's settings (sigma, noise, eps, method, ...)
come from the `FILE.json` beside each file.

A certify file's radii are in the norm of its smoothing noise (its settings' "noise"): l2 for
gaussian, l1 for laplace and uniform; a file without a recorded noise (an older jaxcert) is
gaussian. Tables and plots name that norm, and never put radii of two norms in one column or
on one axis.
"""

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._table import read_settings, read_table
from .smoothing import certified_accuracy
from .smoothing._noise import get_noise

KINDS = {
    "certify": ("radius", "correct"),
    "verify": ("status", "margin_lower"),
    "predict": ("correct", "nB"),
}


class Results(NamedTuple):
    """One result file.

    Attributes:
      path: the TSV file.
      kind: "certify", "verify" or "predict".
      settings: the run's settings (empty when `FILE.json` is missing).
      rows: the rows, as dicts of strings.
    """

    path: Path
    kind: str
    settings: dict
    rows: list


def read_results(path):
    """Read a certify, verify or predict TSV (and its settings); the kind is told by the columns.

    Every row is checked as on a resume (`jaxcert._table.read_table`): a malformed row or a
    repeated image index is an error naming the line; a last line cut short by an interrupted
    write is left out (said on stderr).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is neither kind, has no rows, or does not parse.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a result file")
    columns, rows, torn, _ = read_table(path)
    kind = next((k for k, needed in KINDS.items() if set(needed) <= set(columns)), None)
    if kind is None:
        raise ValueError(
            f"{path} is not a jaxcert certify, verify or predict file (its columns are {columns})"
        )
    if torn is not None:
        print(f"{path}: left out line {torn}, a row cut short by an interrupted write",
              file=sys.stderr)  # fmt: skip
    if not rows:
        raise ValueError(f"{path} holds no result rows yet")
    return Results(path, kind, read_settings(path) or {}, rows)


def noise(results):
    """The smoothing noise of a certify or predict file: its settings' "noise", else "gaussian".

    Raises:
      ValueError: the settings name a noise jaxcert does not know.
    """
    name = results.settings.get("noise", "gaussian")
    try:
        get_noise(name)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{results.path}: its settings record an unknown noise ({err})") from None
    return name


def norm(results):
    """The norm of a certify file's radii: "l2" (gaussian noise) or "l1" (laplace, uniform)."""
    return get_noise(noise(results)).norm


def label(results):
    """A short legend entry: the file's stem and its noise level (and noise, unless Gaussian),
    or its method and radius.

    Args:
      results: a `Results`.

    Returns:
      The label, a string.
    """
    s = results.settings
    if results.kind in ("certify", "predict"):
        extra = f"sigma={s['sigma']:g}" if "sigma" in s else ""
        if noise(results) != "gaussian":
            extra = ", ".join(filter(None, (noise(results), extra)))
    else:
        extra = " ".join(str(s[k]) for k in ("method", "eps") if k in s)
    return f"{results.path.stem} ({extra})" if extra else results.path.stem


def certified_curve(results, radii):
    """Certified accuracy of a certify file at each radius.

    Args:
      results: a `Results` of kind "certify".
      radii: the radii.

    Returns:
      A NumPy array, one accuracy per radius (Cohen et al., 2019).
    """
    radius = np.array([float(r["radius"]) for r in results.rows])
    correct = np.array([r["correct"] == "1" for r in results.rows])
    return np.asarray(certified_accuracy(radius, correct, np.asarray(radii)))


def summary(results, radii):
    """The figures of one file as a dict: certified accuracy per radius (certify), verified
    accuracy and status counts (verify), accuracy and abstentions (predict)."""
    rows = results.rows
    out = {"file": str(results.path), "label": label(results), "kind": results.kind}
    out["images"] = len(rows)
    if results.kind == "certify":
        accuracy = certified_curve(results, radii).tolist()
        out["norm"] = norm(results)
        out["certified_accuracy"] = {f"{r:g}": a for r, a in zip(radii, accuracy)}
    elif results.kind == "verify":
        status = [r["status"] for r in rows]
        correct = sum(r["status"] == "verified" and r["predict"] == r["label"] for r in rows)
        out["verified_accuracy"] = correct / max(len(rows), 1)
        out["verified"], out["falsified"] = status.count("verified"), status.count("falsified")
        out["unknown"] = status.count("unknown") + status.count("unconfirmed")
    else:
        out["accuracy"] = sum(r["correct"] == "1" for r in rows) / max(len(rows), 1)
        out["abstentions"] = sum(r["predict"] == "-1" for r in rows)
    return out


def _group(results):
    """What files share a table: their kind, and for certify files the norm of their radii."""
    return results.kind, norm(results) if results.kind == "certify" else None


def markdown_table(all_results, radii):
    """Markdown tables: certified accuracy per radius (certify files, one table per norm, its
    columns headed "l2 r=..." or "l1 r=..."), verified accuracy with status counts (verify
    files), accuracy and abstentions (predict files)."""
    sections = {
        "certify": (lambda p: [f"{p} r={r:g}" for r in radii],
                    lambda s: [f"{a:.3f}" for a in s["certified_accuracy"].values()]),
        "verify": (lambda p: ["verified accuracy", "verified", "falsified", "unknown"],
                   lambda s: [f"{s['verified_accuracy']:.3f}", s["verified"], s["falsified"],
                              s["unknown"]]),
        "predict": (lambda p: ["accuracy", "abstentions"],
                    lambda s: [f"{s['accuracy']:.3f}", s["abstentions"]]),
    }  # fmt: skip
    groups = dict.fromkeys(_group(r) for r in all_results)  # norms in the order of the files
    lines = []
    for kind, p in sorted(groups, key=lambda g: list(sections).index(g[0])):
        columns, cells = sections[kind]
        head = ["file", "images", *columns(p)]
        chosen = [summary(r, radii) for r in all_results if _group(r) == (kind, p)]
        if lines:
            lines.append("")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in chosen:
            row = [s["label"], s["images"], *cells(s)]
            lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot, drawing to files (the Agg backend).

    Raises:
      ImportError: matplotlib is not installed, naming the install extra as the README does.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            'plotting needs matplotlib: pip install ".[plot]" in a clone of jaxcert (or pip '
            "install matplotlib)"
        ) from err
    return plt


def plottable(all_results):
    """The certify files among `all_results`, and pyplot, checked before anything is drawn.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no certify file was given.
    """
    plt = pyplot()
    certify = [r for r in all_results if r.kind == "certify"]
    if not certify:
        raise ValueError("--plot draws certify files; none was given")
    return certify, plt


def radius_label(name):
    """The radius axis's label for radii in the norm `name`: "radius (l2)" or "radius (l1)"."""
    return f"radius ({name})"


def plot_certified_accuracy(all_results, out, max_radius=None):
    """Certified accuracy against radius for every certify file (as in Cohen et al., 2019,
    Figure 6): on one figure, with one panel per norm of the radii (l2 for Gaussian noise, l1
    for Laplace and uniform), its axis labelled by `radius_label`. Needs matplotlib
    (`pip install ".[plot]"`)."""
    certify, plt = plottable(all_results)
    norms = list(dict.fromkeys(norm(r) for r in certify))
    figure, panels = plt.subplots(1, len(norms), figsize=(6 * len(norms), 4), squeeze=False)
    for p, axes in zip(norms, panels[0]):
        chosen = [r for r in certify if norm(r) == p]
        top = max_radius or max(
            (float(row["radius"]) for r in chosen for row in r.rows), default=1.0
        )
        radii = np.linspace(0.0, max(top, 1e-6) * 1.05, 400)
        for results in chosen:
            axes.plot(radii, certified_curve(results, radii), label=label(results))
        axes.set_xlabel(radius_label(p))
        axes.set_ylabel("certified accuracy")
        axes.set_ylim(0, 1)
        axes.set_xlim(0, radii[-1])
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=150)
    plt.close(figure)
