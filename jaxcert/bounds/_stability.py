"""How many ReLUs are stable (always active or always inactive) over an input set.

An exact verifier needs a binary variable for every unstable ReLU only, so these counts predict
MILP time; training with `jaxcert.train.relu_stability` lowers them (Xiao et al., 2019).
"""

import jax
import jax.numpy as jnp

from .._sets import InputSet
from ..graph import Network
from ._crown import intermediate_bounds


def relu_counts(
    net: Network, spec: InputSet, *, method: str = "crown"
) -> list[dict[str, jax.Array]]:
    """Per ReLU layer and per input set: the numbers of active, inactive and unstable ReLUs.

    A ReLU is active when its input's lower bound is >= 0, inactive when otherwise the upper
    bound is <= 0, and unstable when neither; looser bounds (IBP) count more ReLUs as unstable.

    Args:
      net: a traced network (`jaxcert.trace`).
      spec: an input set over a batch of B inputs.
      method: bounds of the ReLU inputs, "crown" or "ibp" (see `intermediate_bounds`).

    Returns:
      A list with one dict per ReLU in `net.relus()` order, mapping "active", "inactive" and
      "unstable" to integer arrays of shape (B,).

    References:
      K. Y. Xiao et al., "Training for Faster Adversarial Robustness Verification via Inducing
      ReLU Stability", ICLR 2019.
    """
    counts = []
    for b in intermediate_bounds(net, spec, method=method):
        lower = b.lower.reshape(b.lower.shape[0], -1)
        upper = b.upper.reshape(b.upper.shape[0], -1)
        active = jnp.sum(lower >= 0, axis=1)
        inactive = jnp.sum((upper <= 0) & (lower < 0), axis=1)
        counts.append(
            {"active": active, "inactive": inactive, "unstable": lower.shape[1] - active - inactive}
        )
    return counts
