"""Each loader on the real files in shared/data and on small files written like the publishers'."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iotnas.data import detect_layout, load_dataset
from iotnas.errors import DataError


def test_cifar10_binary_real_files(cifar10, shared_data: Path):
    ds = cifar10
    assert (ds.name, ds.num_classes, ds.in_channels, ds.flip_ok) == ("cifar10", 10, 3, True)
    assert ds.train_images.shape == (50_000, 3, 32, 32) and ds.test_images.shape == (10_000, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert torch.bincount(ds.train_labels).tolist() == [5000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.class_names[0] == "airplane" and ds.class_names[-1] == "truck"
    # Independent reading of the last test record, as SOURCES.md documents the format.
    rec = np.fromfile(shared_data / "cifar10" / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
    assert int(ds.test_labels[-1]) == rec[-1, 0]
    assert np.array_equal(ds.test_images[-1].numpy(), rec[-1, 1:].reshape(3, 32, 32))
    rec = np.fromfile(shared_data / "cifar10" / "data_batch_3.bin", dtype=np.uint8).reshape(-1, 3073)
    assert np.array_equal(ds.train_images[20_000 + 17].numpy(), rec[17, 1:].reshape(3, 32, 32))


def test_fashion_mnist_real_files_padded_to_32(shared_data: Path):
    ds = load_dataset(shared_data / "fashion-mnist")
    assert (ds.name, ds.in_channels, ds.flip_ok) == ("fashion-mnist", 1, True)
    assert ds.train_images.shape == (60_000, 1, 32, 32) and ds.test_images.shape == (10_000, 1, 32, 32)
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    with gzip.open(shared_data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    first = np.frombuffer(raw, dtype=np.uint8, offset=16, count=28 * 28).reshape(28, 28)
    assert np.array_equal(ds.test_images[0, 0, 2:30, 2:30].numpy(), first)
    border = ds.train_images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0  # padding is zero
    assert ds.class_names[9] == "Ankle boot"


def test_cifar10_python_batches_with_restricted_unpickler(tmp_path: Path, make):
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        folder = tmp_path / f"p{protocol}" / "cifar-10-batches-py"
        content = make.write_cifar_python(folder, protocol=protocol)
        assert detect_layout(folder.parent) == "cifar10-python"
        ds = load_dataset(folder.parent)
        images, labels = content["data_batch_2"]
        n = make.N_PER_BATCH
        assert torch.equal(ds.train_images[n : 2 * n], torch.from_numpy(images))
        assert ds.train_labels[n : 2 * n].tolist() == labels.tolist()
        assert torch.equal(ds.test_images, torch.from_numpy(content["test_batch"][0]))


def test_cifar10_binary_and_tar_gz_archives_agree(tmp_path: Path, make):
    folder = tmp_path / "cifar-10-batches-bin"
    content = make.write_cifar_bin(folder)
    from_dir = load_dataset(folder)
    archive = make.make_tar(folder, tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin")
    from_tar = load_dataset(archive)
    assert detect_layout(archive) == "cifar10-bin"
    for a, b in ((from_dir.train_images, from_tar.train_images), (from_dir.test_labels, from_tar.test_labels)):
        assert torch.equal(a, b)
    assert torch.equal(from_tar.test_images, torch.from_numpy(content["test_batch"][0]))
    py = make.write_cifar_python(tmp_path / "cifar-10-batches-py")
    py_tar = load_dataset(make.make_tar(tmp_path / "cifar-10-batches-py", tmp_path / "py.tar.gz", "cifar-10-batches-py"))
    assert torch.equal(py_tar.train_images[: make.N_PER_BATCH], torch.from_numpy(py["data_batch_1"][0]))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_gzipped_or_raw(tmp_path: Path, make, gz: bool):
    arrays = make.write_idx(tmp_path / "mnist", gz=gz)
    ds = load_dataset(tmp_path / "mnist")
    assert (ds.name, ds.flip_ok) == ("mnist", False)  # digits are not mirror-symmetric
    assert torch.equal(ds.train_images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_split_by_name(tmp_path: Path):
    rng = np.random.default_rng(0)
    pictures = {}
    for c in ("cat", "dog", "eel"):
        for k in range(5):
            pictures[c, k] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            _png(tmp_path / "pets" / c / f"{k:02d}.png", pictures[c, k])
    assert detect_layout(tmp_path / "pets") == "folder"
    ds = load_dataset(tmp_path / "pets")
    assert ds.class_names == ("cat", "dog", "eel") and ds.in_channels == 3
    assert len(ds.train_labels) == 12 and len(ds.test_labels) == 3  # every 5th image of a class is a test image
    assert ds.test_labels.tolist() == [0, 1, 2]
    assert np.array_equal(ds.test_images[1].numpy().transpose(1, 2, 0), pictures["dog", 4])
    assert np.array_equal(ds.train_images[4].numpy().transpose(1, 2, 0), pictures["dog", 0])


def test_image_folder_with_train_test_and_small_grey_images(tmp_path: Path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    for split in ("train", "test"):
        for c in ("a", "b"):
            _png(tmp_path / "set" / split / c / "0.png", grey)
    ds = load_dataset(tmp_path / "set", layout="folder")
    assert ds.in_channels == 1 and ds.train_images.shape == (2, 1, 32, 32)
    assert np.array_equal(ds.train_images[0, 0, 2:30, 2:30].numpy(), grey)


def test_digits_is_embedded_and_split_deterministically():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (a.name, a.in_channels, a.num_classes, a.flip_ok) == ("digits", 1, 10, False)
    assert len(a.train_labels) + len(a.test_labels) == 1797
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.train_labels, b.train_labels)
    assert torch.bincount(a.test_labels).min() >= 40  # stratified
    assert a.train_images.shape[-2:] == (32, 32) and int(a.train_images.max()) == 255


def test_subset_takes_the_first_examples(tmp_path: Path, make):
    make.write_idx(tmp_path / "m")
    ds = load_dataset(tmp_path / "m")
    small = ds.subset(train=5, test=3)
    assert torch.equal(small.train_images, ds.train_images[:5]) and len(small.test_labels) == 3
    with pytest.raises(DataError, match="at least 1"):
        ds.subset(train=0)


def test_fashion_mnist_identified_by_digest_whatever_the_folder_name(tmp_path: Path, shared_data: Path):
    target = tmp_path / "fmnist_copy"
    target.mkdir()
    for f in (shared_data / "fashion-mnist").iterdir():
        shutil.copy(f, target / f.name)
    assert load_dataset(target).name == "fashion-mnist"  # identified by the official digests

