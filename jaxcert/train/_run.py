"""A whole training run: initialise, train with a progress bar, checkpoint every epoch, resume;
and the robust accuracies a run reports after each epoch."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import serialization

from .. import attacks, bounds, graph, models
from .._progress import Progress
from .._sets import LinfBall
from ._gaussian import gaussian_augmentation_loss
from ._loop import accuracy, fit

_CHECKPOINT = "checkpoint.msgpack"
_CHECKPOINT_SETTINGS = "checkpoint.json"


def train_model(train_x: np.ndarray, train_y: np.ndarray, *, spec: dict, epochs: int, seed: int,
                batch_size: int = 128, lr: float = 1e-3, label: str = "train",
                loss_fn: Callable = gaussian_augmentation_loss,
                on_epoch: Callable[[int, Callable, Any, float, dict], str] | None = None,
                checkpoints: str | Path | None = None, settings: dict | None = None,
                resume: bool = False, **loss_kwargs: Any) -> tuple[Callable, Any]:  # fmt: skip
    """Initialise a model from its architecture dict `spec` (`jaxcert.models.init_model`) and
    train it with Adam (Gaussian augmentation by default), with a progress bar.

    Args:
      train_x, train_y: the training set.
      spec: the architecture, e.g. {"kind": "mlp", "hidden": [256, 256], "num_classes": 10}.
      epochs, seed, batch_size, lr: passes over the data, random seed, examples per step and
        Adam's learning rate.
      label: the progress bar's label.
      loss_fn: the training loss (`jaxcert.train.training_loss`), given `loss_kwargs`.
      on_epoch: optional `on_epoch(epoch, apply_fn, params, loss, aux)` -> a line to print
        after each epoch.
      checkpoints: optional directory: the parameters and optimizer state are saved there after
        every epoch.
      settings: the run's settings, saved with each checkpoint.
      resume: continue from the checkpoint in `checkpoints` (its settings must equal
        `settings`), so an interrupted run loses at most one epoch and ends with the same model
        as an uninterrupted one.

    Returns:
      (apply_fn, params) of the trained model.
    """
    key = jax.random.key(seed)
    apply_fn, params = models.init_model(spec, jax.random.fold_in(key, 0), train_x.shape[1:])
    optimizer = optax.adam(lr)
    opt_state, first_epoch = None, 0
    if resume:
        params, opt_state, first_epoch = _load_checkpoint(checkpoints, settings, params, optimizer)
    with Progress(epochs, label, unit="epoch") as bar:
        bar.update(first_epoch)

        def progress(epoch, params, loss, aux):
            if on_epoch is not None:
                bar.write(on_epoch(epoch, apply_fn, params, loss, aux))
            bar.update()

        def checkpoint(epoch, params, opt_state):
            state = {"params": params, "opt_state": opt_state}
            Path(checkpoints).mkdir(parents=True, exist_ok=True)
            (Path(checkpoints) / _CHECKPOINT).write_bytes(serialization.to_bytes(state))
            record = {"epoch": epoch, "settings": settings}
            (Path(checkpoints) / _CHECKPOINT_SETTINGS).write_text(json.dumps(record))

        params = fit(apply_fn, params, train_x, train_y, jax.random.fold_in(key, 1),
                     epochs=epochs, loss_fn=loss_fn, batch_size=batch_size, optimizer=optimizer,
                     progress=progress, first_epoch=first_epoch, opt_state=opt_state,
                     checkpoint=checkpoint if checkpoints is not None else None,
                     **loss_kwargs)  # fmt: skip
    return apply_fn, params


def has_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` holds the checkpoint of a run (`train_model(checkpoints=...)`).

    Args:
      directory: the run's checkpoint directory.

    Returns:
      True when the directory holds a checkpoint's settings file.
    """
    return (Path(directory) / _CHECKPOINT_SETTINGS).is_file()


def _load_checkpoint(directory, settings, params, optimizer):
    """(params, optimizer state, next epoch) of the run saved in `directory`."""
    record_path, state_path = Path(directory) / _CHECKPOINT_SETTINGS, Path(directory) / _CHECKPOINT
    try:
        record = json.loads(record_path.read_text())
        before, epoch = record["settings"], int(record["epoch"])
        target = {"params": params, "opt_state": optimizer.init(params)}
        state = serialization.from_bytes(target, state_path.read_bytes())
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"--resume: {directory} holds no readable checkpoint ({err!r})") from None
    wanted = json.loads(json.dumps(settings))
    if before != wanted:
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        raise ValueError(f"--resume: {directory} holds a run with other settings, in {changed}")
    return state["params"], state["opt_state"], epoch + 1


def robust_accuracies(
    apply_fn: Callable, params: Any, x: np.ndarray, y: np.ndarray, eps: float
) -> tuple[float, float, float]:
    """Clean, PGD (20 steps, Madry et al.) and IBP-verified accuracy at l_inf radius eps.

    Args:
      apply_fn: the classifier, `apply_fn(params, x) -> logits`, built from layers that
        `jaxcert.trace` supports.
      params: its parameters.
      x: inputs (B, ...), in [0, 1].
      y: integer labels (B,).
      eps: the l_inf radius (>= 0).

    Returns:
      (clean, pgd, verified): the fractions of the inputs classified correctly, that the PGD
      attack fails to misclassify, and that IBP verifies.
    """
    net = graph.trace(apply_fn, params, x[:1])
    _, attack = attacks.pgd(apply_fn, params, x, y, jax.random.key(0), eps, steps=20)
    verified = bounds.certify(net, LinfBall(x, eps), y, method="ibp")
    clean = accuracy(apply_fn, params, x, y)
    return clean, float(np.mean(np.asarray(attack) < 0)), float(np.mean(np.asarray(verified)))
