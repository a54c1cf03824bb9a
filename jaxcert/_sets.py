"""Input sets: l_inf, l_2 and l_1 balls intersected with the data box, and plain boxes; and
the `Property` of a VNN-LIB file (`jaxcert.vnnlib.read_vnnlib`), a union of boxes each with its
unsafe output region, which `jaxcert.exact.verify_property` decides.

Every set is batched over images (leading axis B) and is a pytree, so bound computations vmap
over it. Two operations serve every bound method, for one example:

* `box()`: elementwise bounds (l, u) of the set (interval bound propagation starts there);
* `minimum(a)`: a lower bound of min_z <a_k, z> over the set for each row a_k (linear bounds
  end there): <a, x> - eps ||a||_q by the dual norm (1/p + 1/q = 1), and for a box
  sum_i min(a_i l_i, a_i u_i); for a ball intersected with the box the larger of the two,
  since each minimises over a superset. Rows may carry several leading axes: the sums run over
  the trailing axes, as many as one input has. With `window`, each row holds only the
  coefficients of a window of the input (zero elsewhere) and `window(v)` cuts the matching
  windows out of an input-shaped array v, broadcastable against the rows.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate


def _identity(v):
    return v


def _sum_trailing(v, ndim):
    return jnp.sum(v, axis=tuple(range(v.ndim - ndim, v.ndim)))


def _box_minimum(a, lower, upper, ndim):
    """min over lower <= z <= upper of <a_k, z>, summed over the last `ndim` axes."""
    return _sum_trailing(jnp.where(a > 0, a * lower, a * upper), ndim)


class InputSet:
    """Base class: a batch of sets given by arrays of equal leading axis B."""

    _fields = ()

    def __init__(self, *arrays):
        for name, value in zip(self._fields, arrays):
            setattr(self, name, value)

    def tree_flatten(self):
        return tuple(getattr(self, f) for f in self._fields), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        InputSet.__init__(obj, *children)
        return obj

    @property
    def batch_size(self):
        return getattr(self, self._fields[0]).shape[0]

    @property
    def shape(self):
        """Shape of one input, without the batch axis."""
        return getattr(self, self._fields[0]).shape[1:]

    def __repr__(self):
        return f"{type(self).__name__}(batch={self.batch_size}, shape={self.shape})"


class Box(InputSet):
    """The box lower <= z <= upper, batched over images.

    Args:
      lower: elementwise lower bounds, shape (B, ...).
      upper: elementwise upper bounds, same shape.
    """

    _fields = ("lower", "upper")

    def __init__(self, lower, upper):
        lower, upper = jnp.asarray(lower), jnp.asarray(upper)
        if lower.shape != upper.shape or lower.ndim < 1:
            raise ValueError(
                f"lower and upper must be batches of equal shape, got {lower.shape} and "
                f"{upper.shape}"
            )
        _validate.check_finite("lower", lower)
        _validate.check_finite("upper", upper)
        if not np.all(np.asarray(lower) <= np.asarray(upper)):
            raise ValueError("the box is empty: lower must be <= upper everywhere")
        super().__init__(lower, upper)

    def box(self):
        return self.lower, self.upper

    def minimum(self, a, window=_identity):
        return _box_minimum(a, window(self.lower), window(self.upper), self.lower.ndim)

    def center(self):
        return (self.lower + self.upper) / 2


class _Ball(InputSet):
    _fields = ("x", "eps", "lower", "upper")

    def __init__(self, x, eps, lower=0.0, upper=1.0):
        x = jnp.asarray(x)
        if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a floating batch of inputs (B, ...), got {x.shape}")
        _validate.check_finite("x", x)
        eps = jnp.asarray(eps, x.dtype)
        if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != x.shape[0]):
            raise ValueError(f"eps must be a scalar or one value per image, got {eps.shape}")
        ev = _validate.concrete(eps)
        if ev is not None and not np.all(np.isfinite(ev) & (ev >= 0)):
            raise ValueError(f"eps must be finite and >= 0, got {ev}")
        lower = jnp.broadcast_to(jnp.asarray(lower, x.dtype), x.shape)
        upper = jnp.broadcast_to(jnp.asarray(upper, x.dtype), x.shape)
        lv, uv, xv = (_validate.concrete(v) for v in (lower, upper, x))
        if lv is not None and np.any(np.isnan(lv) | np.isnan(uv)):
            raise ValueError("lower and upper must not be NaN")
        if lv is not None and not np.all(lv <= uv):
            raise ValueError("the data box is empty: lower must be <= upper everywhere")
        if lv is not None and not np.all((lv <= xv) & (xv <= uv)):
            raise ValueError("x must lie inside the data box [lower, upper]")
        super().__init__(x, jnp.broadcast_to(eps, x.shape[:1]), lower, upper)

    def box(self):
        e = self.eps.reshape(self.eps.shape + (1,) * (self.x.ndim - self.eps.ndim))
        return jnp.maximum(self.x - e, self.lower), jnp.minimum(self.x + e, self.upper)

    def center(self):
        return self.x

    def minimum(self, a, window=_identity):
        ndim = self.x.ndim
        in_box = _box_minimum(a, *map(window, self.box()), ndim)
        if self._dual_norm is None:
            return in_box
        flat = a.reshape(*a.shape[: a.ndim - ndim], -1)
        at_x = _sum_trailing(a * window(self.x), ndim)
        return jnp.maximum(at_x - self.eps * self._dual_norm(flat), in_box)


class LinfBall(_Ball):
    """{z : ||z - x||_inf <= eps, lower <= z <= upper}, batched over images.

    Args:
      x: centres, shape (B, ...).
      eps: radius (>= 0), a scalar or one per image.
      lower: data-domain lower bound (scalar or per pixel); default 0.
      upper: data-domain upper bound; default 1.
    """

    _dual_norm = None  # the intersection of an l_inf ball with a box is a box


class L2Ball(_Ball):
    """{z : ||z - x||_2 <= eps, lower <= z <= upper}, batched over images (see `LinfBall`)."""

    @staticmethod
    def _dual_norm(a):
        # ||a||_2 with the subgradient 0 at a = 0, where jnp.linalg.norm's gradient is NaN (a
        # row of zeros: every path through dead ReLUs)
        squared = jnp.sum(a * a, axis=-1)
        positive = squared > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


class L1Ball(_Ball):
    """{z : ||z - x||_1 <= eps, lower <= z <= upper}, batched over images (see `LinfBall`)."""

    @staticmethod
    def _dual_norm(a):
        return jnp.max(jnp.abs(a), axis=-1)


for _cls in (Box, LinfBall, L2Ball, L1Ball):
    jax.tree_util.register_pytree_node_class(_cls)


class Case(NamedTuple):
    """One input box and the unsafe output region that goes with it.

    Attributes:
      lower, upper: the box, arrays of shape (num_inputs,).
      unsafe: list of (C, d) pairs, C of shape (K, num_outputs) and d of shape (K,): the unsafe
        region is the union over pairs of {Y : C @ Y <= d}.
    """

    lower: np.ndarray
    upper: np.ndarray
    unsafe: list


class Property(NamedTuple):
    """A parsed VNN-LIB property: a counterexample is an x in some case's box whose outputs lie
    in that case's unsafe region.

    Attributes:
      cases: list of `Case`, one per distinct nonempty input box (no case: the property holds
        trivially).
    """

    cases: list
