"""Datasets: locate, verify and load image sets into memory as uint8 tensors, shared between worker processes.

>>> from iotnas.data import load_dataset
>>> ds = load_dataset("digits")            # embedded, no files needed
>>> ds = load_dataset("../shared/data/cifar10")  # layout detected from the files
"""

from iotnas.data._dataset import IMAGE_SIZE, Dataset
from iotnas.data._load import EMBEDDED, LAYOUTS, detect_layout, load_dataset
from iotnas.data._shared import (
    dataset_arrays,
    dataset_from_arrays,
    is_shared,
    share_dataset,
)

__all__ = ["EMBEDDED", "IMAGE_SIZE", "LAYOUTS", "Dataset", "dataset_arrays", "dataset_from_arrays", "detect_layout",
           "is_shared", "load_dataset", "share_dataset"]
