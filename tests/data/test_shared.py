"""share_dataset: the same values in shared memory, the caller's dataset untouched, a subset sized to itself,
and each worker loading its own copy where /dev/shm has no room."""

import logging
import shutil

import torch

from iotnas.data import _shared, is_shared, load_dataset, share_dataset


def test_a_shared_dataset_holds_the_same_values_in_shared_memory():
    full = load_dataset("digits")
    dataset = full.subset(train=300, test=100)
    shared = share_dataset(dataset)
    assert shared is not None and is_shared(shared)
    assert not is_shared(dataset) and not is_shared(full)  # the caller's tensors stay where they were
    for split in _shared.SPLITS:
        mine, theirs = getattr(dataset, split), getattr(shared, split)
        assert torch.equal(mine, theirs) and mine.dtype == theirs.dtype
        assert theirs.untyped_storage().nbytes() == theirs.nbytes  # the subset only, not its whole split
    assert torch.equal(shared.channel_mean, dataset.channel_mean)
    assert torch.equal(shared.channel_std, dataset.channel_std)
    assert {"channel_mean", "channel_std"} <= set(vars(shared))  # computed before the workers get it, not in each
    assert (shared.name, shared.class_names, shared.flip_ok) == (dataset.name, dataset.class_names, dataset.flip_ok)


def test_too_little_room_in_dev_shm_means_a_copy_per_worker(monkeypatch, caplog):
    # Filling the machine's /dev/shm would starve every other process on it; report a nearly full one instead.
    dataset = load_dataset("digits")
    needed = sum(getattr(dataset, split).nbytes for split in _shared.SPLITS)
    usage = shutil.disk_usage(_shared.SHM_DIR)
    monkeypatch.setattr(_shared.shutil, "disk_usage", lambda _: usage._replace(free=needed - 1))
    with caplog.at_level(logging.WARNING, logger="iotnas.data._shared"):
        assert share_dataset(dataset) is None
    assert "each worker loads its own copy" in caplog.text
