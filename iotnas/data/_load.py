"""One front door: ``load_dataset("digits")``, ``load_dataset(path)``, ``load_dataset(path, layout=...)``."""

from __future__ import annotations

import logging
from pathlib import Path

from iotnas.data import _cifar, _folder, _idx
from iotnas.data._dataset import Dataset
from iotnas.data._digits import load_digits
from iotnas.data._files import ARCHIVE_SUFFIXES, FileSet
from iotnas.errors import DataError

log = logging.getLogger(__name__)

EMBEDDED = {"digits": load_digits}
LAYOUTS = ("cifar10-bin", "cifar10-python", "idx", "folder")


def load_dataset(spec: str | Path, *, layout: str | None = None, verify: bool = True) -> Dataset:
    """Load a whole dataset into memory, checked; nothing is returned half-loaded.

    Args:
        spec: the name of an embedded dataset (``"digits"``), or a folder or ``.tar.gz`` archive
            holding CIFAR-10 (binary or python batches), MNIST/Fashion-MNIST IDX files, or an
            image folder ``root/<class>/<image>.png``.
        layout: one of :data:`LAYOUTS`; detected from the files when omitted.
        verify: compare files with the publishers' digests where they are known (a mismatch is
            logged, since re-encoded copies are legitimate; structure is always checked).

    Raises:
        DataError: the path is missing, the layout is unknown or does not match, or a file is
            truncated, corrupt or out of range.
    """
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    text = str(spec)
    if text in EMBEDDED and not Path(text).exists():
        if layout is not None:
            raise DataError(f"{text!r} is an embedded dataset; it takes no layout")
        return EMBEDDED[text]()
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join(sorted(EMBEDDED))
        raise DataError(f"{path}: no such file or folder; give a dataset folder or archive, or an embedded dataset ({known})")
    layout = layout or detect_layout(path)
    log.info("loading %s as %s", path, layout)
    if layout == "folder":
        if not path.is_dir():
            raise DataError(f"{path}: the folder layout needs a folder root/<class>/<image>.png")
        return _folder.load_folder(path)
    files = FileSet.open(path)
    if layout == "cifar10-bin":
        if not _cifar.is_binary(files):
            raise _mismatch(path, layout, "data_batch_1.bin")
        return _cifar.load_binary(files, verify=verify)
    if layout == "cifar10-python":
        if not _cifar.is_python(files):
            raise _mismatch(path, layout, "data_batch_1")
        return _cifar.load_python(files, verify=verify)
    if not _idx.is_idx(files):
        raise _mismatch(path, layout, "train-images-idx3-ubyte[.gz]")
    return _idx.load_idx(files, verify=verify)


def detect_layout(path: Path) -> str:
    """The layout of a folder or archive, from the names of the files it holds."""
    if path.is_file() and not path.name.endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{path}: a single file is not a dataset; give the folder or .tar.gz archive that holds it")
    files = FileSet.open(path)
    if _cifar.is_binary(files):
        return "cifar10-bin"
    if _cifar.is_python(files):
        return "cifar10-python"
    if _idx.is_idx(files):
        return "idx"
    if _folder.is_folder(path):
        return "folder"
    raise DataError(
        f"{path}: cannot tell the dataset layout (no data_batch_1.bin, data_batch_1, "
        "train-images-idx3-ubyte[.gz] or class folders of images); name it with layout= / --layout"
    )


def _mismatch(path: Path, layout: str, marker: str) -> DataError:
    return DataError(f"{path}: not in the {layout} layout (no {marker} found); check the path or the layout")
