"""The in-memory dataset value every loader returns and the trainer consumes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import torch

from iotnas.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SIZE = 32  # pixels; the search spaces' pooling windows are fixed for 32x32 inputs


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset held in memory as uint8 tensors.

    Images are ``(N, C, 32, 32)`` uint8 in CHW order, labels ``(N,)`` int64 in
    ``[0, num_classes)``. The value is checked on construction, so a ``Dataset``
    that exists is whole and consistent.

    Attributes:
        name: short name, e.g. ``"cifar10"``, ``"fashion-mnist"``, ``"digits"``.
        train_images, train_labels, test_images, test_labels: the two splits.
        class_names: one name per label, in label order.
        flip_ok: whether a horizontal flip keeps an image in its class (not for digits).
        source: where the data came from (a path, or ``"embedded"``).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    flip_ok: bool
    source: str = field(default="")

    def __post_init__(self) -> None:
        if not self.class_names:
            raise DataError(f"dataset {self.name!r} has no classes")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_split(self.name, split, images, labels, len(self.class_names))
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"dataset {self.name!r}: train images are {tuple(self.train_images.shape[1:])} "
                f"but test images are {tuple(self.test_images.shape[1:])}; both splits must match"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @cached_property
    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the train split on the 0-255 scale, shape ``(C,)`` float32.

        Computed from exact integer sums, so it is the same bit for bit in every process whatever
        its thread count (a float32 reduction's rounding depends on how it is split across threads).
        """
        count, total, _ = self._channel_sums
        return torch.tensor([t / count for t in total], dtype=torch.float32)

    @cached_property
    def channel_std(self) -> torch.Tensor:
        """Per-channel standard deviation (n - 1 in the denominator) of the train split on the 0-255
        scale, ``(C,)`` float32; 1 for a constant channel. Exact like :attr:`channel_mean`."""
        count, total, squares = self._channel_sums
        if count < 2:
            return torch.ones(self.in_channels)
        var = [(count * q - t * t) / (count * (count - 1)) for t, q in zip(total, squares)]
        return torch.tensor([v ** 0.5 if v > 0 else 1.0 for v in var], dtype=torch.float32)

    @cached_property
    def _channel_sums(self) -> tuple[int, list[int], list[int]]:
        """Values per channel, and the exact sums of the values and of their squares per channel."""
        per_value = torch.arange(256, dtype=torch.int64)
        total, squares = [], []
        for c in range(self.in_channels):
            counts = torch.bincount(self.train_images[:, c].reshape(-1), minlength=256)
            total.append(int((counts * per_value).sum()))
            squares.append(int((counts * per_value * per_value).sum()))
        return self.train_images[:, 0].numel(), total, squares

    def subset(self, *, train: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train`` / ``test`` examples of each split (``None`` keeps all), for quick runs."""
        for what, n in (("train", train), ("test", test)):
            if n is not None and n < 1:
                raise DataError(f"subset size for {what} must be at least 1, got {n}")
        return Dataset(
            name=self.name,
            train_images=self.train_images[:train],
            train_labels=self.train_labels[:train],
            test_images=self.test_images[:test],
            test_labels=self.test_labels[:test],
            class_names=self.class_names,
            flip_ok=self.flip_ok,
            source=self.source,
        )

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes"
        )


def _check_split(name: str, split: str, images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
    where = f"dataset {name!r} ({split} split)"
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"{where}: images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise DataError(f"{where}: images have {images.shape[1]} channels; only 1 (grey) or 3 (RGB) are supported")
    if tuple(images.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{where}: images are {images.shape[2]}x{images.shape[3]} pixels but the search spaces take "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}; resize or pad them first"
        )
    if labels.dtype != torch.int64 or labels.dim() != 1:
        raise DataError(f"{where}: labels must be an int64 vector, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{where}: no examples")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise DataError(f"{where}: labels range over {lo}..{hi} but there are {n_classes} classes (0..{n_classes - 1})")
