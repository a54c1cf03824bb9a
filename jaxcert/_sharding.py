"""Spreading a batch over all local devices with JAX's own sharding (Mesh + NamedSharding).

Images are independent, so a batch sharded along its leading axis gives the same results as on
one device; the jitted, vmapped computations are partitioned by XLA (GSPMD). On one device
nothing changes. Several hosts work the same way after `jax.distributed.initialize()`.
"""

import math

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def device_count():
    """The number of devices a batch is spread over: all of them."""
    return jax.device_count()


def mesh(axis):
    """A one-axis mesh over all devices, in automatic (GSPMD) sharding mode."""
    return jax.make_mesh((device_count(),), (axis,), axis_types=(AxisType.Auto,))


def shard_batch(tree):
    """Pad the leading axis of every array in `tree` to a multiple of the device count (by
    repeating the last entry, so a padded input set is still valid) and shard it over the
    devices. Returns (tree, original batch size); on one device the tree is returned as is."""
    leaves = [a for a in jax.tree.leaves(tree) if getattr(a, "ndim", 0) > 0]
    batch = leaves[0].shape[0] if leaves else 0
    devices = device_count()
    if devices == 1 or batch == 0:
        return tree, batch
    size = math.ceil(batch / devices) * devices
    sharding = NamedSharding(mesh("batch"), P("batch"))

    def place(a):
        if getattr(a, "ndim", 0) == 0:
            return a
        a = jnp.asarray(a)
        if size > batch:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], size - batch, axis=0)])
        return jax.device_put(a, sharding)

    return jax.tree.map(place, tree), batch


def unpad(tree, batch):
    """The first `batch` entries of every array in `tree` (undoing `shard_batch`'s padding)."""
    return jax.tree.map(lambda a: a[:batch], tree)
