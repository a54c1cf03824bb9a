"""Tables and plots of jaxcert's result files (the TSVs of `jaxcert certify`, `predict`, `verify`,
read by `jaxcert.results.read_results`).

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

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from jax.typing import ArrayLike

from . import smoothing
from .results import Results, radius_and_correct


def noise(results: Results) -> str:
    """The smoothing noise of a certify or predict file: its settings' "noise", else "gaussian".

    Args:
      results: a `Results` of kind "certify" or "predict".

    Returns:
      The noise's name: "gaussian", "laplace" or "uniform".

    Raises:
      ValueError: the settings name a noise jaxcert does not know.
    """
    name = results.settings.get("noise", "gaussian")
    try:
        smoothing.get_noise(name)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{results.path}: its settings record an unknown noise ({err})") from None
    return name


def norm(results: Results) -> str:
    """The norm of a certify file's radii: "l2" (gaussian noise) or "l1" (laplace, uniform).

    Args:
      results: a `Results` of kind "certify".

    Returns:
      "l2" or "l1".

    Raises:
      ValueError: the settings name a noise jaxcert does not know.
    """
    return smoothing.get_noise(noise(results)).norm


def label(results: Results) -> str:
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


def certified_curve(results: Results, radii: ArrayLike) -> np.ndarray:
    """Certified accuracy of a certify file at each radius.

    Args:
      results: a `Results` of kind "certify".
      radii: the radii.

    Returns:
      A NumPy array, one accuracy per radius (Cohen et al., 2019).
    """
    radius, correct = radius_and_correct(results.rows)
    return np.asarray(smoothing.certified_accuracy(radius, correct, np.asarray(radii)))


def summary(results: Results, radii: Sequence[float]) -> dict[str, Any]:
    """The figures of one file as a dict: certified accuracy per radius (certify), verified
    accuracy and status counts (verify), accuracy and abstentions (predict).

    Args:
      results: a `Results`.
      radii: the radii of the certified accuracies (used for certify files only).

    Returns:
      A dict with "file", "label", "kind" and "images", plus for a certify file "norm" and
      "certified_accuracy" ({radius formatted with :g: accuracy}), for a verify file
      "verified_accuracy", "verified", "falsified" and "unknown", and for a predict file
      "accuracy" and "abstentions".

    Raises:
      ValueError: a certify or predict file whose settings name a noise jaxcert does not know.
    """
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


def markdown_table(all_results: Sequence[Results], radii: Sequence[float]) -> str:
    """Markdown tables: certified accuracy per radius (certify files, one table per norm, its
    columns headed "l2 r=..." or "l1 r=..."), verified accuracy with status counts (verify
    files), accuracy and abstentions (predict files).

    Args:
      all_results: the files, each a `Results`.
      radii: the radii of the certified-accuracy columns.

    Returns:
      The tables, separated by blank lines, as one string.

    Raises:
      ValueError: a certify or predict file whose settings name a noise jaxcert does not know.
    """
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


def pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files (the Agg backend).

    Returns:
      The `matplotlib.pyplot` module.

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


def plottable(all_results: Sequence[Results]) -> tuple[list[Results], ModuleType]:
    """The certify files among `all_results`, and pyplot, checked before anything is drawn.

    Args:
      all_results: the files, each a `Results`.

    Returns:
      (certify, plt): the `Results` of kind "certify", in order, and `matplotlib.pyplot`.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no certify file was given.
    """
    plt = pyplot()
    certify = [r for r in all_results if r.kind == "certify"]
    if not certify:
        raise ValueError("--plot draws certify files; none was given")
    return certify, plt


def radius_label(name: str) -> str:
    """The radius axis's label for radii in the norm `name`: "radius (l2)" or "radius (l1)".

    Args:
      name: the norm, "l2" or "l1".

    Returns:
      The label.
    """
    return f"radius ({name})"


def plot_certified_accuracy(
    all_results: Sequence[Results], out: str | Path, max_radius: float | None = None
) -> None:
    """Certified accuracy against radius for every certify file (as in Cohen et al., 2019,
    Figure 6): on one figure, with one panel per norm of the radii (l2 for Gaussian noise, l1
    for Laplace and uniform), its axis labelled by `radius_label`. Needs matplotlib
    (`pip install ".[plot]"`).

    Args:
      all_results: the files, each a `Results`; those that are not certify files are left out.
      out: the image file to write (its format from its suffix, e.g. ".png").
      max_radius: the largest radius to draw (the axis extends 5% beyond it); default the
        largest radius in the files.

    Returns:
      None.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no certify file was given, or one whose settings name an unknown noise.
    """
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


_CAP_FORMULAS = {
    "gaussian": "sigma * Phi^-1(alpha^(1/n))",
    "laplace": "-sigma * log(2 (1 - alpha^(1/n)))",
    "uniform": "2 sigma (alpha^(1/n) - 1/2)",
}


def smoothing_table(
    results: Mapping[float, tuple[ArrayLike, ArrayLike]],
    radii: Sequence[float],
    n: int,
    alpha: float,
    base_accuracy: Mapping[float, float] | None = None,
    noise: str = "gaussian",
) -> str:
    """Markdown table of smoothing runs: certified accuracy at each radius per noise level, with
    its lower bound (`jaxcert.smoothing.certified_accuracy_table`) and the radius cap.

    Args:
      results: {sigma: (radius, correct)} arrays, one pair per noise level.
      radii: the radii of the columns.
      n, alpha: the runs' estimation samples and failure probability.
      base_accuracy: optional {sigma: accuracy of the base classifier}, a column of its own.
      noise: the runs' noise, which sets the norm of the radii and the cap's formula.

    Returns:
      The table and a paragraph explaining it, as one string.
    """
    head = ["sigma"] + (["base acc"] if base_accuracy else []) + [f"r={r}" for r in radii]
    head += ["radius cap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sigma, (radius, correct) in results.items():
        table = smoothing.certified_accuracy_table(radius, correct, radii, alpha=alpha)
        cells = [f"{sigma:g}"]
        if base_accuracy:
            cells.append(f"{base_accuracy[sigma]:.3f}")
        cells += [f"{a:.3f} ({lo:.3f})" for a, lo in zip(table.accuracy, table.lower_bound)]
        cells.append(f"{smoothing.radius_cap(sigma, n, alpha, noise):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    # The Gaussian table keeps the words it always had; the others name their noise and norm.
    kind = f"{noise} noise of scale sigma, {smoothing.get_noise(noise).norm} radius r; "
    kind = "" if noise == "gaussian" else kind
    lines.append(
        f"\nCertified accuracy of the smoothed classifier over {len(radius)} test images "
        f"({kind}r=0: its clean accuracy; abstentions count as wrong); in brackets a lower bound "
        f"that holds with probability 0.999 over the noise (Bernstein, given alpha={alpha}). The "
        f"radius cap {_CAP_FORMULAS[noise]} is the largest radius {n} samples can certify."
    )
    return "\n".join(lines)
