"""Spreading a batch over all local devices with JAX's own sharding (Mesh + NamedSharding).

Images are independent, so a batch sharded along its leading axis gives the same results as on
one device; the jitted, vmapped computations are partitioned by XLA (GSPMD). On one device
nothing changes. Several processes (hosts) work the same way after `jax.distributed.initialize()`:
the mesh then spans the devices of every process, each process passes the same inputs (checked,
see `check_same_on_all_processes`) and gets the whole result back.
"""

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def device_count():
    """The number of devices a batch is spread over: all of them."""
    return jax.device_count()


def single_cpu_device():
    """Whether a batch runs on one CPU device: no accelerator, nothing to shard over."""
    return jax.default_backend() == "cpu" and device_count() == 1


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
    check_same_on_all_processes("the inputs", tree)
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
    """The first `batch` entries of every array in `tree` (undoing `shard_batch`'s padding).

    With several processes, an array still split over devices of other processes is gathered
    (replicated on every device), so that each process can read all of it, e.g. with
    `np.asarray`; in one process the arrays are returned as sliced."""
    return jax.tree.map(lambda a: _addressable(a[:batch]), tree)


def _addressable(a):
    if jax.process_count() == 1 or isinstance(a, jax.core.Tracer):  # nothing to gather
        return a
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
        return a
    return jax.jit(lambda v: v, out_shardings=NamedSharding(mesh("batch"), P()))(a)


def check_same_on_all_processes(what, tree):
    """Raise a ValueError, on every process alike, unless the arrays of `tree` are the same on
    every process (compared by a SHA-256 digest of their bytes, shapes and dtypes).

    A computation over the devices of several processes takes its replicated inputs from each
    process's own copy, so different copies would silently mix into one wrong result. Arrays
    already spanning the devices of other processes are one global array and are skipped. Every
    process must call this at the same point; in one process it does nothing."""
    if jax.process_count() == 1:
        return
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            if not leaf.is_fully_addressable:
                continue
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
        value = np.asarray(leaf)
        digest.update(repr((value.dtype.str, value.shape)).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    mine = np.frombuffer(digest.digest(), np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine))  # (process_count, 8)
    differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if differ:
        raise ValueError(
            f"{what} must be the same on every process: processes {differ} hold other values "
            f"than process 0 (with jax.process_count() = {jax.process_count()}, every process "
            "passes the whole batch, the same parameters and the same key)"
        )
