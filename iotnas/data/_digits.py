"""scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32: a dataset that needs no files."""

from __future__ import annotations

import numpy as np
import torch

from iotnas.data._dataset import IMAGE_SIZE, Dataset

TEST_FRACTION = 0.25  # of each class, chosen by a fixed seed so every machine gets the same split
SPLIT_SEED = 0
MAX_VALUE = 16  # the sklearn digits are counts of set pixels in 4x4 blocks, 0..16


def load_digits() -> Dataset:
    """1,797 grey digits: 8x8 counts scaled to 0-255 and upsampled bilinearly to 32x32."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / MAX_VALUE))[:, None]
    large = torch.nn.functional.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = large.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return Dataset(
        name="digits",
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        test_images=images[test_idx],
        test_labels=labels[test_idx],
        class_names=tuple(str(d) for d in range(10)),
        flip_ok=False,
        source="embedded (sklearn.datasets.load_digits)",
    )
