"""Writes MNIST's IDX files (raw or gzipped), for tests that read them."""

import gzip

import numpy as np


def idx_bytes(array, magic):
    """An IDX file's bytes: the magic number, the dimensions, then the uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(directory, split, images, labels, compress=False):
    """Write one split's image and label files under MNIST's standard names."""
    prefix = "train" if split == "train" else "t10k"
    files = {
        f"{prefix}-images-idx3-ubyte": idx_bytes(images, 0x803),
        f"{prefix}-labels-idx1-ubyte": idx_bytes(labels, 0x801),
    }
    for name, raw in files.items():
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
