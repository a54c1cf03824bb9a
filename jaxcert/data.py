"""Datasets: the bundled 8x8 digits set and MNIST read from local IDX files.

Every loader returns ``(images, labels)`` as NumPy arrays: images float32 of shape
``(N, H, W, 1)`` (NHWC) scaled to [0, 1], labels int32. jaxcert never downloads data.
"""

import gzip
import importlib.resources
from pathlib import Path

import numpy as np

num_classes = 10
"""Number of classes of both datasets."""

_DIGITS_SPLITS = ("train", "test", "all")
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads the bundled optical-recognition digits set (1797 images of 8x8 pixels).

    The test split is a fixed set of 360 images; the train split is the other 1437.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.

    Returns:
        ``(images, labels)``: float32 images of shape ``(N, 8, 8, 1)`` in [0, 1] and int32 labels.

    References:
        E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
        Repository, 1998.
    """
    if split not in _DIGITS_SPLITS:
        raise ValueError(f"split must be one of {_DIGITS_SPLITS}, got {split!r}")
    resource = importlib.resources.files("jaxcert") / "_data" / "digits.npz"
    with resource.open("rb") as f, np.load(f) as archive:
        images = archive["images"]
        labels = archive["labels"]
        is_test = archive["is_test"]
    if split == "train":
        images, labels = images[~is_test], labels[~is_test]
    elif split == "test":
        images, labels = images[is_test], labels[is_test]
    images = (images.astype(np.float32) / 16.0)[..., None]
    return images, labels.astype(np.int32)


def _read_idx(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read()


def _find_idx(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _parse_idx(raw: bytes, magic: int, ndim: int, path: Path) -> np.ndarray:
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{path} is too short to be an IDX file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path} has IDX magic number {found:#010x}, expected {magic:#010x}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header announces shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_mnist(directory: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads MNIST from the standard IDX files in a local directory.

    Each file may be raw or gzip-compressed with a ``.gz`` suffix. Nothing is downloaded.

    Args:
        directory: folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (optionally ``.gz``).
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).

    Returns:
        ``(images, labels)``: float32 images of shape ``(N, 28, 28, 1)`` in [0, 1] and int32
        labels.

    References:
        Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-Based Learning Applied to Document
        Recognition", Proceedings of the IEEE, 1998.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be one of {tuple(_MNIST_FILES)}, got {split!r}")
    directory = Path(directory)
    names = _MNIST_FILES[split]
    paths = [_find_idx(directory, name) for name in names]
    if not directory.is_dir() or None in paths:
        expected = ", ".join(f"{name}[.gz]" for name in names)
        raise FileNotFoundError(
            f"MNIST {split} files not found in {str(directory)!r}: expected {expected}. "
            "jaxcert never downloads data; place the IDX files there yourself."
        )
    images_path, labels_path = paths
    images = _parse_idx(_read_idx(images_path), _IMAGES_MAGIC, 3, images_path)
    labels = _parse_idx(_read_idx(labels_path), _LABELS_MAGIC, 1, labels_path)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    images = (images.astype(np.float32) / 255.0)[..., None]
    return images, labels.astype(np.int32)


def load_dataset(
    name: str, split: str, data_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a dataset by name.

    Args:
        name: ``"digits"`` (bundled) or ``"mnist"`` (read from ``data_dir``).
        split: ``"train"`` or ``"test"`` (digits also accepts ``"all"``).
        data_dir: folder of the MNIST IDX files; required for ``"mnist"``, ignored for digits.

    Returns:
        ``(images, labels)`` as returned by `load_digits` or `load_mnist`.
    """
    if name == "digits":
        return load_digits(split)
    if name == "mnist":
        if data_dir is None:
            raise ValueError(
                "data_dir is required for dataset 'mnist' (a folder of the IDX files); "
                "jaxcert never downloads data"
            )
        return load_mnist(data_dir, split)
    raise ValueError(f"name must be 'digits' or 'mnist', got {name!r}")
