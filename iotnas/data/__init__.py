"""Datasets: locate, verify and load image sets into memory as uint8 tensors.

>>> from iotnas.data import load_dataset
>>> ds = load_dataset("digits")            # embedded, no files needed
>>> ds = load_dataset("../shared/data/cifar10")  # layout detected from the files
"""

from iotnas.data._dataset import IMAGE_SIZE, Dataset
from iotnas.data._load import EMBEDDED, LAYOUTS, detect_layout, load_dataset

__all__ = ["EMBEDDED", "IMAGE_SIZE", "LAYOUTS", "Dataset", "detect_layout", "load_dataset"]
