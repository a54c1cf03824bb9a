"""Checks shared by the bound methods, and helpers for specification matrices."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._sets import InputSet
from ..graph import Network


def _identity(v):
    return v


def input_scale(example, a, window=_identity):
    """The magnitude of the terms of `example.minimum(a, window)`, for its rounding allowance.

    sum |a| max(|l|, |u|) over the set's box [l, u] (which holds the ball's centre), plus
    eps ||a||_q for an l_2 or l_1 ball; summed like `minimum` over the trailing axes.
    """
    lower, upper = example.box()
    magnitude = jnp.maximum(jnp.abs(window(lower)), jnp.abs(window(upper)))
    ndim = lower.ndim
    scale = jnp.sum(jnp.abs(a) * magnitude, axis=tuple(range(a.ndim - ndim, a.ndim)))
    dual_norm = getattr(example, "_dual_norm", None)  # None for boxes and l_inf balls
    if dual_norm is not None:
        scale = scale + example.eps * dual_norm(a.reshape(*a.shape[: a.ndim - ndim], -1))
    return scale


def check_inputs(net: Network, spec: InputSet, C: ArrayLike | None = None) -> None:
    """Validate the input set against the network, and C's shape (B, K, num_outputs).

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set over a batch of B inputs.
      C: optional specification matrix (B, K, num_outputs).

    Returns:
      None.

    Raises:
      TypeError: `spec` is not an input set.
      ValueError: the inputs of `spec` do not have the network's input shape, or C is not of
        shape (B, K, num_outputs).
    """
    if not isinstance(spec, InputSet):
        raise TypeError(
            f"spec must be an input set (LinfBall, L2Ball, L1Ball, Box), got {type(spec).__name__}"
        )
    if tuple(spec.shape) != tuple(net.input_shape):
        raise ValueError(
            f"spec holds inputs of shape {tuple(spec.shape)}, the network takes "
            f"{tuple(net.input_shape)}"
        )
    if C is not None:
        C = jnp.asarray(C)
        want = (spec.batch_size, None, *net.output_shape)
        if C.ndim != 3 or C.shape[0] != want[0] or C.shape[2:] != tuple(net.output_shape):
            raise ValueError(
                f"C must have shape (B={spec.batch_size}, K, {net.output_shape[0]}), got {C.shape}"
            )


def check_activation_bounds(net, spec, bounds):
    """Validate given pre-activation bounds: one Interval per activation in
    `net.activations()` order, each of shape (B, *that activation's input shape without the
    leading 1)."""
    activations = net.activations()
    if len(bounds) != len(activations):
        raise ValueError(
            f"intermediate holds {len(bounds)} bounds, the network has {len(activations)} "
            "activation layers (ReLUs and the like)"
        )
    for i, (bound, eq) in enumerate(zip(bounds, activations)):
        want = (spec.batch_size, *eq.inputs[0].shape[1:])
        if tuple(bound.lower.shape) != want or tuple(bound.upper.shape) != want:
            raise ValueError(
                f"intermediate bound {i} must have shape {want}, got {bound.lower.shape} and "
                f"{bound.upper.shape}"
            )


def margin_matrix(y: ArrayLike, num_classes: int) -> jax.Array:
    """C with rows e_y - e_j for every j != y: shape (B, num_classes - 1, num_classes).

    Args:
      y: the true classes, integers of shape (B,).
      num_classes: number of classes.

    Returns:
      The specification matrix C, of shape (B, num_classes - 1, num_classes); the rows of each
      image are in the order of the classes j != y, ascending.
    """
    y = jnp.asarray(y)
    eye = jnp.eye(num_classes)
    others = jnp.array([[j for j in range(num_classes) if j != c] for c in range(num_classes)])
    return eye[y][:, None, :] - eye[others[y]]
