"""Small dataset files, written the way their publishers write them, for the loader tests."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

N_PER_BATCH = 20  # records per CIFAR-10 batch file in the small copies


def cifar_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (N_PER_BATCH, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, N_PER_BATCH)


BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar_bin(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for k, name in enumerate(BATCHES):
        images, labels = cifar_arrays(k)
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(N_PER_BATCH, -1)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
        content[name] = (images, labels)
    (folder / "batches.meta.txt").write_text("\n".join("airplane automobile bird cat deer dog frog horse ship truck".split()) + "\n")
    return content


def write_cifar_python(folder: Path, protocol: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for k, name in enumerate(BATCHES):
        images, labels = cifar_arrays(k)
        batch = {b"batch_label": b"x", b"labels": labels.tolist(), b"data": images.reshape(N_PER_BATCH, -1),
                 b"filenames": [b"f.png"] * N_PER_BATCH}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        content[name] = (images, labels)
    return content


def write_idx(folder: Path, *, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, array in arrays.items():
        magic = (0x0803 if array.ndim == 3 else 0x0801).to_bytes(4, "big")
        raw = magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def make_tar(source: Path, archive: Path, top: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=top)
    return archive


@pytest.fixture
def cifar_bin_dir(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-bin"
    return folder, write_cifar_bin(folder)


@pytest.fixture
def make():
    """The writers above, for tests that need variations of the files.

    A namespace, not this module: every test folder's conftest is a module called ``conftest``.
    """
    from types import SimpleNamespace

    return SimpleNamespace(N_PER_BATCH=N_PER_BATCH, make_tar=make_tar, write_cifar_bin=write_cifar_bin,
                           write_cifar_python=write_cifar_python, write_idx=write_idx)


@pytest.fixture(scope="session")
def cifar10(shared_data: Path):
    from iotnas.data import load_dataset

    return load_dataset(shared_data / "cifar10")
