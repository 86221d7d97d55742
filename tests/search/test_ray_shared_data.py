"""Ray workers read one copy of the dataset from Ray's object store: a task's splits are read-only views of the
store's shared buffer (no copy, no warning), and a 2-worker Ray search trains as a privately loaded dataset would."""

import os
import threading
from pathlib import Path

import psutil
import pytest

from iotnas.arch import Arch
from iotnas.data import dataset_arrays, load_dataset
from iotnas.executors import RayExecutor
from iotnas.search import prepare_search
from iotnas.search.training import TrainingEvaluator, load_study_dataset
from iotnas.store import Store
from iotnas.study import load_study

ray = pytest.importorskip("ray")

TASK_TITLE = "ray::_ray_worker"  # Ray titles a worker process after the task it runs (iotnas.executors._ray_worker)
POLL_S = 0.3  # seconds between looks at the workers' memory (reading it costs the workers' core time)

STUDY = """\
name = "ray-data"
seed = 5
data = { dataset = "digits", limit = 384 }
device = { kind = "local", min_s = 0.05 }
constraints = { max_weight_bytes = 8192 }
space = { laws = ["probenet/s2"], pool_per_law = 12 }
strategy = { name = "random" }
budget = { trainings = 2, epochs = [2] }
training = { batch_size = 64 }
workers = { threads = 1, heartbeat_s = 0.5, stale_after_s = 5, poll_s = 0.2 }
"""


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds); the executor uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _store_bytes(pid: int) -> int:
    """Resident bytes of Ray's object store (its ``plasma`` file) in process ``pid``."""
    try:
        maps = psutil.Process(pid).memory_maps(grouped=False)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0
    return sum(region.rss for region in maps if Path(region.path).name.startswith("plasma"))


def _task_processes(pid: int) -> list[int]:
    """The processes under ``pid`` running a worker task now."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    titled = []
    for child in found:
        try:
            if child.cmdline()[:1] == [TASK_TITLE]:
                titled.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return titled


def test_a_task_reads_the_splits_in_place_from_the_object_store(local_ray):
    dataset = load_dataset("digits").subset(train=300, test=100)
    ref = ray.put(dataset_arrays(dataset))

    @ray.remote(num_cpus=1, max_calls=1)  # its process then exits: no other test sees the pages it read
    def inspect(values: dict) -> dict:
        import warnings

        import psutil

        from iotnas.data import dataset_from_arrays
        from iotnas.data._shared import SPLITS

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a read-only array must not warn here
            rebuilt = dataset_from_arrays(values)
        maps = psutil.Process().memory_maps(grouped=False)
        found = {}
        for split in SPLITS:
            array, tensor = values[split], getattr(rebuilt, split)
            owner = array
            while isinstance(owner, type(array)):
                owner = owner.base
            address = array.ctypes.data
            region = next(m.path for m in maps if int(m.addr.split("-")[0], 16) <= address
                          < int(m.addr.split("-")[1], 16))
            found[split] = {"writeable": array.flags.writeable, "owner": type(owner).__module__,
                            "region": Path(region).name, "same_memory": tensor.data_ptr() == address,
                            "values": tensor.clone()}
        found["statistics"] = (rebuilt.channel_mean, rebuilt.channel_std, set(vars(rebuilt)))
        found["meta"] = (rebuilt.name, rebuilt.class_names, rebuilt.flip_ok, rebuilt.source)
        return found

    found = ray.get(inspect.remote(ref))
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        seen = found[split]
        assert not seen["writeable"] and seen["owner"] == "ray._raylet", split  # a view of Ray's buffer
        assert seen["region"].startswith("plasma"), split  # ... in the object store's shared memory
        assert seen["same_memory"], split  # and the tensor is that memory, not a copy
        assert (seen["values"] == getattr(dataset, split)).all(), split
    mean, std, cached = found["statistics"]
    assert (mean == dataset.channel_mean).all() and (std == dataset.channel_std).all()
    assert {"channel_mean", "channel_std"} <= cached  # the driver's, not recomputed in the task
    assert found["meta"] == (dataset.name, dataset.class_names, dataset.flip_ok, dataset.source)


def test_ray_workers_train_from_the_object_store_as_a_private_copy_would(tmp_path, local_ray):
    study = tmp_path / "ray-data.toml"
    study.write_text(STUDY)
    loaded = load_study(study)
    url = f"sqlite:///{tmp_path / 'ray-data.db'}"
    prepare_search(loaded, store_url=url)
    private = load_study_dataset(loaded)
    nbytes = private.train_images.nbytes
    store_bytes: dict[int, int] = {}  # worker task process -> the most of the object store it held
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(POLL_S):
            for pid in _task_processes(os.getpid()):  # Ray's processes descend from this one
                store_bytes[pid] = max(store_bytes.get(pid, 0), _store_bytes(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        summaries = RayExecutor().run(loaded, url, workers=2)
    finally:
        finished.set()
        watcher.join()
    assert len(summaries) == 2
    with Store.open(url, study_name=loaded.name, create=False) as store:
        archs = {c.key: Arch.from_json(c.arch_json) for c in store.candidates()}
        done = store.trainings(status="done")
    trainers = {int(t.worker.split(":")[1]) for t in done}  # a worker is host:pid:nonce
    assert len(done) == 2 and len(trainers) == 2
    readers = {pid for pid, held in store_bytes.items() if held >= nbytes}
    assert trainers <= readers, f"a worker did not read the train images from the object store: {store_bytes}"

    evaluator = TrainingEvaluator(loaded, private)
    for training in done:
        again = evaluator.evaluate(archs[training.arch_key], training.epochs,
                                   workdir=tmp_path / "private" / training.arch_key.replace("/", "_"))
        assert again.accuracy == training.accuracy, training.arch_key
