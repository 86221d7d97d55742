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


def test_channel_statistics_are_exact_whatever_the_thread_count():
    # The launcher computes them for its workers with its own thread count; a float32 reduction split
    # differently would round differently, and every worker would train on slightly different inputs.
    images = torch.randint(0, 256, (4000, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    dataset = load_dataset("digits")
    dataset = type(dataset)(name="random", train_images=images, train_labels=torch.zeros(4000, dtype=torch.int64),
                            test_images=images[:10], test_labels=torch.zeros(10, dtype=torch.int64),
                            class_names=("a",), flip_ok=True)
    exact = images.double()
    assert torch.equal(dataset.channel_mean, exact.mean(dim=(0, 2, 3)).float())
    assert torch.equal(dataset.channel_std, exact.std(dim=(0, 2, 3)).float())
    previous = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            again = type(dataset)(**{k: getattr(dataset, k) for k in
                                     ("name", "train_images", "train_labels", "test_images", "test_labels",
                                      "class_names", "flip_ok")})
            assert torch.equal(again.channel_mean, dataset.channel_mean)
            assert torch.equal(again.channel_std, dataset.channel_std)
    finally:
        torch.set_num_threads(previous)
