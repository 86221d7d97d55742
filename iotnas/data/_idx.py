"""MNIST and Fashion-MNIST in the IDX format (gzipped or raw), 28x28 images zero-padded to 32x32."""

from __future__ import annotations

import numpy as np
import torch

from iotnas.data._dataset import IMAGE_SIZE, Dataset
from iotnas.data._files import FileSet, verify_known
from iotnas.errors import DataError

IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def is_idx(files: FileSet) -> bool:
    return any(files.has(STEMS["train_images"] + suffix) for suffix in ("", ".gz"))


def load_idx(files: FileSet, *, verify: bool = True, name: str | None = None) -> Dataset:
    """Both splits of an MNIST-like set; ``name`` forces ``"mnist"`` or ``"fashion-mnist"``.

    Without ``name``, a file matching the official Fashion-MNIST digest, or a path containing
    "fashion", makes it Fashion-MNIST (horizontal flips allowed); otherwise it is MNIST (no flips).
    """
    arrays: dict[str, np.ndarray] = {}
    identified: set[str] = set()
    for key, stem in STEMS.items():
        file = stem + ".gz" if files.has(stem + ".gz") else stem
        raw = files.raw(file)
        if verify and (found := verify_known(file, raw, files.where(file))):
            identified.add(found)
        arrays[key] = _parse(files.content(file, raw), files.where(file), images=key.endswith("images"))
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{files.origin}: {n_images} {split} images but {n_labels} labels; a file is truncated")
    if name is None:
        fashion = "fashion-mnist" in identified or "fashion" in str(files.origin).lower()
        name = "fashion-mnist" if fashion else "mnist"
    return Dataset(
        name=name,
        train_images=_pad(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=_pad(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        class_names=FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES,
        flip_ok=name == "fashion-mnist",
        source=str(files.origin),
    )


def _parse(data: bytes, where: str, *, images: bool) -> np.ndarray:
    expected_magic, ndim = (IMAGES_MAGIC, 3) if images else (LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: {len(data)} bytes, shorter than an IDX header; the file is truncated, download it again")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        kind = "image" if images else "label"
        raise DataError(f"{where}: magic number {magic:#010x}, not an IDX {kind} file ({expected_magic:#010x})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{where}: {len(data)} bytes but the header announces {dims} ({expected} bytes); "
            "the file is truncated or corrupt, download it again"
        )
    if images and dims[1:] != (28, 28):
        raise DataError(f"{where}: images are {dims[1]}x{dims[2]}; MNIST-like sets have 28x28 images")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def pad_to(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Zero-pad (N, C, H, W) images to ``size`` x ``size``, centred."""
    n, c, h, w = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, c, size, size), dtype=np.uint8)
    out[:, :, top : top + h, left : left + w] = images
    return out


def _pad(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pad_to(images[:, None]))
