import hashlib

import numpy as np
import pytest
from mnist_files import idx_bytes, write_mnist

from jaxcert import data


def test_digits_shapes_and_range():
    for split, n in (("train", 1437), ("test", 360), ("all", 1797)):
        images, labels = data.load_digits(split)
        assert images.shape == (n, 8, 8, 1)
        assert images.dtype == np.float32
        assert labels.shape == (n,)
        assert labels.dtype == np.int32
        assert images.min() == 0.0 and images.max() == 1.0
        assert set(np.unique(labels)) == set(range(data.num_classes))


def test_digits_splits_are_disjoint_and_fixed():
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    all_x, all_y = data.load_digits("all")
    # The two splits partition the full set: every image of "all" appears in exactly one split.
    rows = {row.tobytes() for row in all_x.reshape(len(all_x), -1)}
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    test_rows = {row.tobytes() for row in test_x.reshape(len(test_x), -1)}
    assert len(rows) == len(all_x)  # no duplicate images, so content identifies an example
    assert not train_rows & test_rows
    assert train_rows | test_rows == rows
    np.testing.assert_array_equal(np.sort(np.concatenate([train_y, test_y])), np.sort(all_y))
    # The test split is fixed in the bundled file: pin its class counts and content.
    assert np.bincount(test_y).tolist() == [37, 41, 37, 35, 31, 50, 34, 33, 27, 35]
    digest = hashlib.sha256(test_x.tobytes() + test_y.tobytes()).hexdigest()
    assert digest.startswith("0dc45b84019f7e95")


def test_digits_bad_split():
    with pytest.raises(ValueError, match="split"):
        data.load_digits("validation")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_reads_idx_files(tmp_path, split, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    write_mnist(tmp_path, split, images, labels, compress)
    x, y = data.load_mnist(tmp_path, split)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int32
    np.testing.assert_allclose(x[..., 0] * 255.0, images, atol=1e-4)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(y, labels)
    x2, y2 = data.load_dataset("mnist", split, data_dir=tmp_path)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*never downloads"):
        data.load_mnist(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        data.load_mnist(tmp_path / "absent", "train")


def test_mnist_bad_magic_and_counts(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros(3, np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images, 0x801))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x801))
    with pytest.raises(ValueError, match="magic"):
        data.load_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images, 0x803))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:2], 0x801))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        data.load_mnist(tmp_path, "test")


def test_load_dataset_dispatch():
    x, y = data.load_dataset("digits", "test")
    assert x.shape == (360, 8, 8, 1)
    with pytest.raises(ValueError, match="data_dir"):
        data.load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="'digits' or 'mnist'"):
        data.load_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="split"):
        data.load_mnist(".", "validation")
