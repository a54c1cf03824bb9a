"""Result files of `jaxcert certify`, `predict` and `verify`: their columns, their rows, and
reading them back.

A certify file follows Cohen et al.'s columns (idx, label, predict, radius, correct, time, nA,
n, pA_lower, seed); a predict file adds the runner-up count nB; a verify file has a status per
image ("verified", "falsified", "unknown", "unconfirmed") with its margin bounds. Rows are
written through `jaxcert._table.ResumableTable`, so an interrupted run resumes where it stopped.
Image `idx` of a smoothing run draws its noise from `fold_in(key(seed), idx)`: a row does not
depend on which other images were processed with it, and a resumed run equals an uninterrupted
one.
"""

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import bounds, data, exact, smoothing
from ._progress import Progress
from ._sets import LinfBall
from ._table import read_settings, read_table
from .graph import Network

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "nA", "n",
                   "pA_lower", "seed")  # fmt: skip
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time", "nA", "nB", "n", "seed")
VERIFY_COLUMNS = ("idx", "label", "predict", "status", "margin_lower", "margin_upper", "target",
                  "time", "binaries")  # fmt: skip
# The columns that tell a file's kind when it is read back.
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


def read_results(path: str | Path) -> Results:
    """Read a certify, verify or predict TSV (and its settings); the kind is told by the columns.

    Every row is checked as on a resume (`jaxcert._table.read_table`): a malformed row or a
    repeated image index is an error naming the line; a last line cut short by an interrupted
    write is left out (said on stderr).

    Args:
      path: the TSV file; its settings are read from `FILE.json` beside it.

    Returns:
      A `Results`.

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


def radius_and_correct(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(radius, correct) arrays of certify rows, as written (numbers) or read back (strings).

    Args:
      rows: certify rows, each with a "radius" and a "correct" entry.

    Returns:
      (radius, correct): a float NumPy array of the radii and a boolean one, True where
      "correct" is 1.
    """
    radius = np.array([float(r["radius"]) for r in rows])
    correct = np.array([int(r["correct"]) == 1 for r in rows])
    return radius, correct


def _smoothing_rows(labels, indices, seed, images_per_step, label, on_row, evaluate):
    """Rows over groups of image indices, with a progress bar: `evaluate(group, keys)` gives
    the group's predictions and each image's own columns; every row also gets idx, label,
    predict, correct, time (the group's seconds per image) and seed."""
    root = jax.random.key(seed)
    rows = []
    with Progress(len(indices), label) as bar:
        for start in range(0, len(indices), images_per_step):
            group = np.asarray(indices[start : start + images_per_step])
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, group)
            began = time.perf_counter()
            predictions, columns = evaluate(group, keys)
            predictions = np.asarray(predictions)
            seconds = (time.perf_counter() - began) / len(group)
            for idx, p, own in zip(group, predictions, columns):
                row = {"idx": int(idx), "label": int(labels[idx]), "predict": int(p),
                       "correct": int(p == labels[idx]), "time": repr(float(seconds)), **own,
                       "seed": seed}  # fmt: skip
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            bar.update(len(group))
    return rows


def certify_rows(apply_fn: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
                 indices: Sequence[int] | np.ndarray, *, sigma: float, n0: int, n: int,
                 alpha: float, batch_size: int | None, seed: int, noise: str = "gaussian",
                 target_radius: float | None = None, images_per_step: int = 8,
                 label: str = "certify", on_row: Callable[[dict], None] | None = None
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """CERTIFY images one group at a time (`jaxcert.smoothing.certify`), one row per image.

    The radius is in the norm of `noise` (l2 for gaussian, l1 for laplace and uniform);
    `on_row(row)` is called as each group finishes. With `target_radius`, sampling stops once
    the certificate at that radius is decided and the n column gives the estimation samples
    each image used.

    Args:
      apply_fn: the base classifier, `apply_fn(params, x) -> logits` on a batch.
      params: its parameters.
      images: the data set's images (N, ...).
      labels: their integer labels (N,).
      indices: the indices of the images to certify; image `idx` draws its noise from
        `fold_in(key(seed), idx)`.
      sigma, n0, n, alpha, batch_size, noise, target_radius: as in
        `jaxcert.smoothing.certify`.
      seed: the seed of the noise, written in each row.
      images_per_step: images certified together.
      label: the progress bar's label.
      on_row: optional `on_row(row)`, called with each row as its group finishes.

    Returns:
      The rows, one dict per image with the `CERTIFY_COLUMNS` as keys, in the order of
      `indices`.
    """

    def evaluate(group, keys):
        cert = smoothing.certify(apply_fn, params, images[group], keys, sigma=sigma,
                                 num_classes=data.num_classes, n0=n0, n=n, alpha=alpha,
                                 batch_size=batch_size, noise=noise,
                                 target_radius=target_radius)  # fmt: skip
        columns = [
            {
                "radius": repr(float(cert.radius[j])),
                "nA": int(cert.counts[j, cert.selected[j]]),
                "n": int(cert.num_samples[j]) - n0,
                "pA_lower": repr(float(cert.p_lower[j])),
            }
            for j in range(len(group))
        ]
        return cert.prediction, columns

    return _smoothing_rows(labels, indices, seed, images_per_step, label, on_row, evaluate)


def predict_rows(apply_fn: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
                 indices: Sequence[int] | np.ndarray, *, sigma: float, n: int, alpha: float,
                 batch_size: int | None, seed: int, noise: str = "gaussian",
                 images_per_step: int = 8, on_row: Callable[[dict], None] | None = None
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """PREDICT images one group at a time (`jaxcert.smoothing.predict`): Cohen et al.'s predict
    columns plus the two top counts; `on_row(row)` as each group finishes.

    Args:
      apply_fn, params, images, labels, indices: as in `certify_rows` (the indices of the
        images to classify).
      sigma, n, alpha, batch_size, noise: as in `jaxcert.smoothing.predict`.
      seed: the seed of the noise, written in each row.
      images_per_step: images classified together.
      on_row: optional `on_row(row)`, called with each row as its group finishes.

    Returns:
      The rows, one dict per image with the `PREDICT_COLUMNS` as keys, in the order of
      `indices`.
    """

    def evaluate(group, keys):
        prediction, counts = smoothing.predict(apply_fn, params, images[group], keys,
                                               sigma=sigma, num_classes=data.num_classes, n=n,
                                               alpha=alpha, batch_size=batch_size,
                                               noise=noise)  # fmt: skip
        top = np.sort(np.asarray(counts), axis=1)[:, ::-1]
        return prediction, [{"nA": int(a), "nB": int(b), "n": n} for a, b in top[:, :2]]

    return _smoothing_rows(labels, indices, seed, images_per_step, "predict", on_row, evaluate)


def verify_rows(
    net: Network,
    images: np.ndarray,
    labels: np.ndarray,
    group: Sequence[int] | np.ndarray,
    *,
    eps: float,
    method: str,
    **exact_options: Any,
) -> list[dict[str, Any]]:
    """The verify rows of a group of images, verified together at l_inf radius `eps`.

    `method` "exact" decides each image by `jaxcert.exact.verify` (with `exact_options`:
    strategy, solver, time_limit, mode, attack_steps, tighten, seed, progress); the bound
    methods of `jaxcert.bounds.margins` prove ("verified") or answer "unknown", and share their
    time equally among the images.

    Args:
      net: the traced classifier (`jaxcert.trace`).
      images: the data set's images (N, ...), in [0, 1].
      labels: their integer labels (N,).
      group: the indices of the images to verify.
      eps: the l_inf radius.
      method: "exact", or a method of `jaxcert.bounds.margins`.
      **exact_options: options of `jaxcert.exact.verify` (with "exact" only).

    Returns:
      The rows, one dict per image with the `VERIFY_COLUMNS` as keys, in the order of `group`.
    """
    x, y = images[group], labels[group].astype(int)
    spec = LinfBall(x, eps)
    began = time.perf_counter()
    predict = np.argmax(np.asarray(net(x)), axis=1)
    if method == "exact":
        found = [
            (r.status, r.margin_lower, r.margin_upper, r.target, r.binaries, r.seconds)
            for r in exact.verify(net, spec, y, **exact_options)
        ]
    else:
        margins = np.asarray(bounds.margins(net, spec, y, method=method))
        seconds = (time.perf_counter() - began) / len(group)
        found = [
            ("verified" if m.min() > 0 else "unknown", m.min(), np.inf, int(np.argmin(m)), 0,
             seconds)
            for m in margins
        ]  # fmt: skip
    return [
        {
            "idx": int(idx),
            "label": int(label),
            "predict": int(p),
            "status": status,
            "margin_lower": repr(float(lower)),
            "margin_upper": repr(float(upper)),
            "target": target,
            "time": repr(float(seconds)),
            "binaries": binaries,
        }
        for idx, label, p, (status, lower, upper, target, binaries, seconds) in zip(
            group, y, predict, found
        )
    ]
