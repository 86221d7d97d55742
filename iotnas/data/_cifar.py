"""CIFAR-10 in its two official layouts (binary ``*.bin`` and python pickle batches), on disk or in a tar archive."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from iotnas.data._dataset import Dataset
from iotnas.data._files import FileSet, verify_known
from iotnas.errors import DataError

log = logging.getLogger(__name__)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes
OFFICIAL_RECORDS = 10_000  # per batch file


def is_binary(files: FileSet) -> bool:
    return files.has("data_batch_1.bin")


def is_python(files: FileSet) -> bool:
    return files.has("data_batch_1")


def load_binary(files: FileSet, *, verify: bool = True) -> Dataset:
    """The binary version: records of one label byte and 3072 pixel bytes, no header."""
    train = [_read_bin(files, f"{name}.bin", verify) for name in TRAIN_BATCHES]
    test = _read_bin(files, f"{TEST_BATCH}.bin", verify)
    names = _class_names(files, "batches.meta.txt")
    return _assemble(files, train, test, names)


def load_python(files: FileSet, *, verify: bool = True) -> Dataset:
    """The python version: pickled dicts with ``data`` (N, 3072) uint8 and ``labels``."""
    train = [_read_pickle(files, name, verify) for name in TRAIN_BATCHES]
    test = _read_pickle(files, TEST_BATCH, verify)
    names = CLASSES
    if files.has("batches.meta"):
        meta = _restricted_load(files.raw("batches.meta"), files.where("batches.meta"))
        label_names = meta.get("label_names") if isinstance(meta, dict) else None
        if isinstance(label_names, list) and len(label_names) == len(CLASSES):
            names = tuple(str(n) for n in label_names)
    return _assemble(files, train, test, names)


def _read_bin(files: FileSet, name: str, verify: bool) -> tuple[np.ndarray, np.ndarray, str]:
    raw = files.raw(name)
    where = files.where(name)
    if verify:
        verify_known(name, raw, where)
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{where}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records; "
            "the file is truncated or not a CIFAR-10 binary batch, download it again"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64), where


class _BatchUnpickler(pickle.Unpickler):
    """Rebuilds only what a CIFAR-10 batch holds: dicts, lists, bytes, str, numbers and NumPy arrays.

    A plain ``pickle.load`` runs any callable the file names; this one refuses every global
    outside the few NumPy reconstruction helpers, so a crafted file cannot execute code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes as _codecs.encode(str, "latin1")
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _restricted_load(raw: bytes, where: str) -> object:
    try:
        return _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{where}: not a readable CIFAR-10 python batch ({exc}); the file is truncated, corrupt, "
            "or not from the official cifar-10-python archive"
        ) from exc


def _read_pickle(files: FileSet, name: str, verify: bool) -> tuple[np.ndarray, np.ndarray, str]:
    raw = files.raw(name)
    where = files.where(name)
    if verify:
        verify_known(name, raw, where)
    batch = _restricted_load(raw, where)
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{where}: the batch has no 'data' array or no 'labels'; not a CIFAR-10 python batch")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_BYTES - 1:
        raise DataError(f"{where}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: 'labels' are not integers") from exc
    if label_array.shape != (len(data),):
        raise DataError(f"{where}: {len(data)} images but {label_array.size} labels")
    return data.reshape(-1, 3, 32, 32), label_array, where


def _class_names(files: FileSet, name: str) -> tuple[str, ...]:
    if not files.has(name):
        return CLASSES
    lines = [line.strip() for line in files.raw(name).decode("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) != len(CLASSES):
        raise DataError(f"{files.where(name)}: {len(lines)} class names, expected {len(CLASSES)}")
    return tuple(lines)


def _assemble(files: FileSet, train: list, test: tuple, names: tuple[str, ...]) -> Dataset:
    counts = {where: len(labels) for _, labels, where in [*train, test]}
    if len(set(counts.values())) != 1:
        detail = ", ".join(f"{Path(w).name}: {n}" for w, n in counts.items())
        raise DataError(
            f"{files.origin}: CIFAR-10 batch files hold different numbers of records ({detail}); "
            "one is truncated, download the dataset again"
        )
    n = next(iter(counts.values()))
    if n != OFFICIAL_RECORDS:
        log.warning("%s: %d records per batch file, not the official %d", files.origin, n, OFFICIAL_RECORDS)
    for _, labels, where in [*train, test]:
        if labels.min() < 0 or labels.max() >= len(CLASSES):
            raise DataError(f"{where}: labels range over {labels.min()}..{labels.max()}; CIFAR-10 labels are 0..9")
    train_images = torch.from_numpy(np.concatenate([images for images, _, _ in train]))
    train_labels = torch.from_numpy(np.concatenate([labels for _, labels, _ in train]))
    return Dataset(
        name="cifar10",
        train_images=train_images,
        train_labels=train_labels,
        test_images=torch.from_numpy(test[0].copy()),
        test_labels=torch.from_numpy(test[1].copy()),
        class_names=names,
        flip_ok=True,
        source=str(files.origin),
    )
