"""Shared noise through a network's first affine layers, computed once per image and per row.

With `shared_noise=True` sample j of every image i is x_i + sigma eps_j. Up to its first
activation a network is affine, A(x) = L(x) + c, so A(x_i + sigma eps_j) = A(x_i) + L(sigma
eps_j): A runs once per image and its linear part L once per noise row, instead of once per
(image, row) pair, and only the rest of the network runs on the B x S sums. For a
784-256-256-10 MLP over 16 images that removes most of the products of the first layer, three
quarters of all of them. L is A's derivative (`jax.jvp`), so biases drop out of it exactly.

The sums equal the direct evaluation in exact arithmetic; in floating point they are rounded
differently (by a few units in the last place of the first layer's outputs), so a noisy input
that lies within rounding of a decision boundary can be classified differently. The counts, and
so the certificates, are those of the classifier evaluated this way.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import graph

_RULES = {"linear": graph.evaluate, "activation": graph.evaluate}
_PRODUCTS = ("dot_general", "conv_general_dilated")


class AffinePrefix(NamedTuple):
    """A traced classifier cut at its first activation (`split`)."""

    consts: dict  # the parameters and every value computed from them alone
    prefix: tuple  # the input-dependent equations before the first activation (affine)
    suffix: tuple  # the input-dependent equations from it on
    cut: tuple  # the prefix's values (or the input) that the suffix reads
    input_var: graph.Var
    output_var: graph.Var

    def _prefix(self, x):
        env = {**self.consts, self.input_var: x}
        graph.run(self.prefix, env, _RULES)
        return tuple(env[v] for v in self.cut)

    def images(self, x):
        """A(x_i) at the cut for a batch of images: a tuple of (B, 1, ...) arrays."""
        return jax.vmap(self._prefix)(x[:, None])

    def rows(self, noise):
        """L(noise_j) at the cut for a batch of noise rows shaped like x."""
        zero = jnp.zeros((1, *noise.shape[1:]), noise.dtype)
        return jax.vmap(lambda t: jax.jvp(self._prefix, (zero,), (t,))[1])(noise[:, None])

    def logits(self, images, rows):
        """The classifier's logits on every (image, row) pair, image-major: (B * S, classes)."""
        pairs = [(a[:, None] + b[None]).reshape(-1, *a.shape[1:]) for a, b in zip(images, rows)]

        def rest(values):
            env = {**self.consts, **dict(zip(self.cut, values))}
            graph.run(self.suffix, env, _RULES)
            return env[self.output_var]

        out = jax.vmap(rest)(tuple(pairs))
        return out.reshape(out.shape[0], -1)


def split(apply_fn, params, x):
    """`apply_fn` cut at its first activation, or None where that saves nothing.

    None when the classifier cannot be traced (`jaxcert.graph.trace`: an operation that is
    neither linear nor a registered activation on the input's path) or when no product
    (dense layer, convolution) precedes its first activation.
    """
    try:
        net = graph.trace(apply_fn, params, x[:1])
    except (ValueError, TypeError):  # graph.UnsupportedOperation among them: run as it is
        return None
    equations = net.equations
    first = next((i for i, e in enumerate(equations) if e.kind == "activation"), len(equations))
    prefix = tuple(e for e in equations[:first] if e.kind != "const")
    if not any(e.primitive.name in _PRODUCTS for e in prefix):
        return None
    consts = dict(zip(net.graph.param_vars, jax.tree.leaves(params)))
    graph.run([e for e in equations if e.kind == "const"], consts, _RULES)
    suffix = tuple(e for e in equations[first:] if e.kind != "const")
    made = [net.graph.input_var, *(v for e in prefix for v in e.outputs)]
    read = {v for e in suffix for v in e.inputs if isinstance(v, graph.Var)}
    cut = tuple(v for v in made if v in read or v is net.graph.output_var)
    return AffinePrefix(consts, prefix, suffix, cut, net.graph.input_var, net.graph.output_var)
