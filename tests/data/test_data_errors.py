"""Missing, truncated, corrupt and mislabelled data: one clear DataError naming the file."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from iotnas.data import load_dataset
from iotnas.errors import DataError


def test_truncated_binary_batch_names_the_file(cifar_bin_dir):
    folder, _ = cifar_bin_dir
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*truncated"):
        load_dataset(folder)


def test_batch_truncated_at_a_record_boundary(cifar_bin_dir):
    folder, _ = cifar_bin_dir
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[: 3073 * 5])
    with pytest.raises(DataError, match=r"test_batch\.bin: 5"):
        load_dataset(folder)


def test_missing_batch(cifar_bin_dir):
    folder, _ = cifar_bin_dir
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(DataError, match=r"missing data_batch_5\.bin"):
        load_dataset(folder)


def test_label_out_of_range(cifar_bin_dir):
    folder, _ = cifar_bin_dir
    path = folder / "data_batch_1.bin"
    raw = bytearray(path.read_bytes())
    raw[3073 * 4] = 12
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"data_batch_1\.bin: labels range over \d+\.\.12"):
        load_dataset(folder)


def test_truncated_archive(tmp_path: Path, cifar_bin_dir, make):
    folder, _ = cifar_bin_dir
    archive = make.make_tar(folder, tmp_path / "c.tar.gz", "cifar-10-batches-bin")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"c\.tar\.gz.*truncated or corrupt"):
        load_dataset(archive)


def test_truncated_and_corrupt_idx(tmp_path: Path, make):
    make.write_idx(tmp_path / "m")
    path = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*truncated or corrupt"):
        load_dataset(tmp_path / "m")
    make.write_idx(tmp_path / "n", gz=False)
    path = tmp_path / "n" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: .*header announces"):
        load_dataset(tmp_path / "n")
    path.write_bytes(b"\x00\x00\x09\x99" + b"\x00" * 40)
    with pytest.raises(DataError, match="not an IDX image file"):
        load_dataset(tmp_path / "n")


def test_idx_counts_must_agree(tmp_path: Path, make):
    make.write_idx(tmp_path / "m", gz=False)
    make.write_idx(tmp_path / "other", n_train=29, gz=False)
    os.replace(tmp_path / "other" / "train-labels-idx1-ubyte", tmp_path / "m" / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="30 train images but 29 labels"):
        load_dataset(tmp_path / "m")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_with_code_is_refused(tmp_path: Path, make, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    make.write_cifar_python(folder)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_1: .*refusing to load (posix|os)\.system"):
        load_dataset(folder)
    assert not (tmp_path / "pwned").exists()


def test_corrupt_pickle(tmp_path: Path, make):
    folder = tmp_path / "cifar-10-batches-py"
    make.write_cifar_python(folder)
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 python batch"):
        load_dataset(folder)


def test_wrong_path_layout_and_unknown_layout(tmp_path: Path, cifar_bin_dir):
    folder, _ = cifar_bin_dir
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not in the idx layout"):
        load_dataset(folder, layout="idx")
    with pytest.raises(DataError, match="unknown layout 'jpeg'"):
        load_dataset(folder, layout="jpeg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="a single file is not a dataset"):
        load_dataset(folder / "data_batch_1.bin")


def test_image_folder_too_large_and_undecodable(tmp_path: Path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "big" / c).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "big" / c / f"{k}.png")
    with pytest.raises(DataError, match=r"0\.png: the image is 64x64 pixels.*resize"):
        load_dataset(tmp_path / "big")
    for c in ("a", "b"):
        for k in range(5):
            Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "big" / c / f"{k}.png")
    (tmp_path / "big" / "b" / "3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"3\.png: cannot decode"):
        load_dataset(tmp_path / "big")
