"""The margins of a classifier over an input set by any bound method, through one table."""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._sets import InputSet
from .._validate import check_choice
from ..graph import Network
from ._crown import alpha_crown, crown
from ._ibp import ibp
from ._lp import lp
from ._spec import check_inputs, margin_matrix

# Each method bounds C @ f over the set; margins need only the lower bounds.
_METHODS = {
    "ibp": ibp,
    "crown": partial(crown, lower_only=True),
    "crown-ibp": partial(crown, intermediate="ibp", lower_only=True),
    "alpha-crown": partial(alpha_crown, lower_only=True),
    "lp": lp,
}
METHODS = tuple(_METHODS)


def margins(
    net: Network, spec: InputSet, y: ArrayLike, method: str = "crown", **kw: Any
) -> jax.Array:
    """Lower bounds of the margins f_y(z) - f_j(z) over the input set, for every class j.

    Args:
      net: a traced classifier with outputs of shape (num_classes,).
      spec: an input set over a batch of B inputs.
      y: the true classes, integers of shape (B,) (or one for all).
      method: "ibp", "crown", "crown-ibp" (crown with interval intermediate bounds),
        "alpha-crown" or "lp" (the triangle LP relaxation, `jaxcert.bounds.lp`).
      **kw: options of the chosen method (e.g. `relu` for "crown", `steps` for "alpha-crown").

    Returns:
      An array (B, num_classes): column j bounds min f_y - f_j from below; column y is +inf, so
      the input set is certified exactly when every entry is > 0.

    Raises:
      ValueError: for an unknown method or a class out of range.

    References:
      Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
      Functions", 2018.
    """
    check_choice("method", method, METHODS)
    check_inputs(net, spec)
    if len(net.output_shape) != 1 or net.output_shape[0] < 2:
        raise ValueError(
            f"margins need logits of shape (num_classes >= 2,), got {net.output_shape}"
        )
    num_classes = net.output_shape[0]
    y = np.asarray(y)
    if y.ndim > 1 or (y.ndim == 1 and y.shape[0] != spec.batch_size):
        raise ValueError(f"y must have shape (B={spec.batch_size},), got {y.shape}")
    y = np.broadcast_to(y, (spec.batch_size,))
    if not np.issubdtype(y.dtype, np.integer) or np.any((y < 0) | (y >= num_classes)):
        raise ValueError(f"y must hold integer classes in [0, {num_classes}), got {y}")
    C = margin_matrix(jnp.asarray(y), num_classes)
    bounds = _METHODS[method](net, spec, C, **kw)
    classes = np.arange(num_classes)
    row = classes - (classes > y[:, None])  # row of C holding e_y - e_j
    lower = jnp.take_along_axis(bounds.lower, jnp.asarray(np.clip(row, 0, num_classes - 2)), 1)
    return jnp.where(jnp.asarray(classes == y[:, None]), jnp.inf, lower)


def certify(
    net: Network, spec: InputSet, y: ArrayLike, method: str = "crown", **kw: Any
) -> jax.Array:
    """Whether every input set is certified: all margin lower bounds are > 0.

    Args:
      net: a traced classifier.
      spec: an input set over a batch of B inputs.
      y: the true classes, shape (B,).
      method: as in `margins`.
      **kw: options of the method.

    Returns:
      A boolean array of shape (B,).

    References:
      Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
      Functions", 2018.
    """
    return jnp.all(margins(net, spec, y, method, **kw) > 0, axis=1)
