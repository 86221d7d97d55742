"""A user's own images: ``root/<class>/<image>.png|jpg``, optionally split as ``root/train/…`` and ``root/test/…``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from iotnas.data._dataset import IMAGE_SIZE, Dataset
from iotnas.data._idx import pad_to
from iotnas.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TEST_EVERY = 5  # without train/ and test/ folders, every 5th image of a class (sorted by name) is a test image


def is_folder(path: Path) -> bool:
    """True when ``path`` has class folders holding images (directly or under train/ and test/)."""
    if not path.is_dir():
        return False
    root = path / "train" if (path / "train").is_dir() and (path / "test").is_dir() else path
    return any(_images(d) for d in root.iterdir() if d.is_dir())


def load_folder(path: Path, *, flip_ok: bool = True) -> Dataset:
    """Load every image; classes are the sub-folder names in sorted order.

    Images may be grey or colour (a set with any colour image is loaded as RGB) and at most
    32x32 pixels; smaller images are zero-padded to 32x32, centred.
    """
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _classes(path / "train")
        if _classes(path / "test") != classes:
            raise DataError(f"{path}: train/ and test/ have different class folders; give both the same classes")
        train_files = [(f, i) for i, c in enumerate(classes) for f in _images(path / "train" / c)]
        test_files = [(f, i) for i, c in enumerate(classes) for f in _images(path / "test" / c)]
    else:
        classes = _classes(path)
        train_files, test_files = [], []
        for i, c in enumerate(classes):
            for k, f in enumerate(_images(path / c)):
                (test_files if k % TEST_EVERY == TEST_EVERY - 1 else train_files).append((f, i))
    if not train_files or not test_files:
        raise DataError(f"{path}: too few images to form train and test splits; add images to the class folders")
    decoded = [_read(f) for f, _ in train_files + test_files]
    channels = 3 if any(a.shape[0] == 3 for a in decoded) else 1
    images = np.stack([_pad_one(a, channels, f) for a, (f, _) in zip(decoded, train_files + test_files)])
    labels = np.array([i for _, i in train_files + test_files], dtype=np.int64)
    n = len(train_files)
    return Dataset(
        name=path.name,
        train_images=torch.from_numpy(images[:n].copy()),
        train_labels=torch.from_numpy(labels[:n].copy()),
        test_images=torch.from_numpy(images[n:].copy()),
        test_labels=torch.from_numpy(labels[n:].copy()),
        class_names=tuple(classes),
        flip_ok=flip_ok,
        source=str(path),
    )


def _classes(root: Path) -> list[str]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _images(d))
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folder(s) with images; an image folder needs root/<class>/<image>.png for at least 2 classes")
    return classes


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)


def _read(file: Path) -> np.ndarray:
    """(C, H, W) uint8 with C = 1 for grey images and 3 otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            mode = "L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB"
            array = np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{file}: cannot decode the image ({exc}); replace or remove the file") from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _pad_one(array: np.ndarray, channels: int, file: Path) -> np.ndarray:
    _, h, w = array.shape
    if h > IMAGE_SIZE or w > IMAGE_SIZE:
        raise DataError(
            f"{file}: the image is {w}x{h} pixels but the search spaces take {IMAGE_SIZE}x{IMAGE_SIZE}; "
            f"resize the images to {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if array.shape[0] != channels:
        array = np.repeat(array, channels, axis=0)
    return pad_to(array[None])[0]
