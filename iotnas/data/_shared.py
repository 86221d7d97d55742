"""One copy of a dataset's tensors for every worker process on a host.

The launcher of local workers loads the study's dataset once and copies its tensors into shared
memory; each worker process it starts receives them (torch passes a shared CPU tensor between
processes as a file descriptor) and maps the same pages instead of loading its own copy.
With torch's default strategy on Linux (``file_descriptor``) a segment is unlinked from
``/dev/shm`` as soon as it is made, so the kernel frees it with the last process that maps it,
also when every process is killed: nothing is left behind for a later run to clean up.

Ray workers get the same dataset as plain values instead (:func:`dataset_arrays`): NumPy arrays,
strings and numbers, which Ray's object store holds once per node and every task on that node reads
in place (:func:`dataset_from_arrays`).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iotnas.data._dataset import Dataset

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")  # where POSIX shared memory lives on Linux (a tmpfs, often small in containers)
SPLITS = ("train_images", "train_labels", "test_images", "test_labels")
STATISTICS = ("channel_mean", "channel_std")  # the dataset's cached properties a worker should not recompute


def share_dataset(dataset: Dataset) -> Dataset | None:
    """``dataset`` with its tensors in shared memory and its channel statistics computed once.

    Pass the result to worker processes started afterwards (``multiprocessing`` arguments): they
    map the same memory. ``None`` where this host cannot share it (too little room in
    ``/dev/shm``, or a platform without shared CPU tensors); each worker then loads its own copy.
    The given dataset is left as it was.
    """
    needed = sum(getattr(dataset, split).nbytes for split in SPLITS)
    if SHM_DIR.is_dir():
        free = shutil.disk_usage(SHM_DIR).free
        if free < needed:  # a tmpfs accepts the segment, then a worker dies of SIGBUS when it touches a page
            log.warning("%s: %d MiB free, the dataset needs %d MiB; each worker loads its own copy",
                        SHM_DIR, free >> 20, needed >> 20)
            return None
    try:
        tensors = {split: _shared_copy(getattr(dataset, split)) for split in SPLITS}
    except (RuntimeError, OSError) as exc:  # torch: no shared memory on this platform, or it is full
        log.warning("cannot put the dataset in shared memory (%s); each worker loads its own copy", exc)
        return None
    shared = dataclasses.replace(dataset, **tensors)
    _ = shared.channel_mean, shared.channel_std  # computed once here (a pass over the split), not in every worker
    return shared


def is_shared(dataset: Dataset) -> bool:
    """Whether every split of ``dataset`` lives in shared memory."""
    return all(getattr(dataset, split).is_shared() for split in SPLITS)


def _shared_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` in a shared-memory segment of its own size (a subset does not pin its whole split)."""
    return torch.empty(tensor.shape, dtype=tensor.dtype).share_memory_().copy_(tensor)


def dataset_arrays(dataset: Dataset) -> dict[str, Any]:
    """``dataset`` as plain values (NumPy arrays, strings, a bool), its channel statistics computed once.

    For an object store that holds NumPy arrays without pickling code (Ray's): no iotnas object goes
    in, so a worker needs no matching class to read it. The arrays share the dataset's memory.
    """
    values: dict[str, Any] = {split: np.ascontiguousarray(getattr(dataset, split).numpy()) for split in SPLITS}
    values.update({name: getattr(dataset, name).numpy() for name in STATISTICS})
    values.update(name=dataset.name, class_names=list(dataset.class_names), flip_ok=dataset.flip_ok,
                  source=dataset.source)
    return values


def dataset_from_arrays(values: dict[str, Any]) -> Dataset:
    """The dataset :func:`dataset_arrays` gave, its splits on the given arrays without a copy.

    Arrays that Ray's object store hands out are read-only views of its shared buffer; the tensors
    here are views of the same memory (so a task reads the one copy on its node).
    """
    with warnings.catch_warnings():
        # torch warns that it cannot mark a tensor read-only. Nothing writes to a dataset's splits:
        # batches and evaluation inputs are gathered or converted into new tensors first.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        splits = {split: torch.from_numpy(values[split]) for split in SPLITS}
    dataset = Dataset(name=values["name"], class_names=tuple(values["class_names"]), flip_ok=values["flip_ok"],
                      source=values["source"], **splits)
    # What the cached properties would compute, as the launcher computed them (a few floats, copied).
    vars(dataset).update({name: torch.tensor(values[name]) for name in STATISTICS})
    return dataset
