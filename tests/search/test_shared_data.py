"""Local workers map one shared copy of the dataset: the same segment in every worker, a killed worker's
replacement included, the same accuracies as a privately loaded dataset, nothing left in /dev/shm."""

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from search_process import rows, start_search

from iotnas.arch import Arch
from iotnas.search.training import TrainingEvaluator, load_study_dataset
from iotnas.store import Store
from iotnas.study import load_study

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="Linux's POSIX shared memory (/dev/shm)")

STUDY = """\
name = "shared-data"
seed = 5
[data]
dataset = "digits"
limit = 512
[device]
kind = "local"
min_s = 0.05
[constraints]
max_weight_bytes = 8192
[space]
laws = ["probenet/s2"]
pool_per_law = 12
[strategy]
name = "random"
[budget]
trainings = 3
epochs = [4]
[training]
batch_size = 64
[workers]
threads = 1
heartbeat_s = 0.5
stale_after_s = 5
poll_s = 0.2
"""


def _segments(pid: int) -> dict[str, int]:
    """Path -> mapped bytes of each torch shared-memory segment process ``pid`` maps (its name in /dev/shm,
    made of its creator's pid and a random number, whether or not still there)."""
    segments: dict[str, int] = {}
    try:
        maps = psutil.Process(pid).memory_maps(grouped=False)
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ended (a zombie's maps are empty)
        return segments
    for region in maps:
        if region.path.startswith(f"{SHM}/torch_"):
            start, end = (int(a, 16) for a in region.addr.split("-"))
            segments[region.path] = segments.get(region.path, 0) + end - start
    return segments


def _train_segment(pid: int, nbytes: int) -> str | None:
    """The segment holding the train images (``nbytes``, rounded up to whole pages) that ``pid`` maps."""
    page = os.sysconf("SC_PAGE_SIZE")
    size = -(-nbytes // page) * page
    return next((path for path, mapped in _segments(pid).items() if mapped == size), None)


def _children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def _leftovers(pids: set[int]) -> list[str]:
    """Named segments in /dev/shm that one of ``pids`` made (torch names them torch_<pid>_...)."""
    return [p.name for p in SHM.iterdir() if any(p.name.startswith(f"torch_{pid}_") for pid in pids)]


def _study(tmp_path: Path) -> Path:
    study = tmp_path / "shared-data.toml"
    study.write_text(STUDY)
    return study


def _train_bytes(study: Path) -> int:
    return load_study_dataset(load_study(study)).train_images.nbytes


def test_workers_and_a_replacement_map_one_copy_and_train_as_a_private_copy_would(tmp_path):
    study = _study(tmp_path)
    db = tmp_path / "shared-data.db"
    nbytes = _train_bytes(study)
    proc = start_search(study, "--workers", "2")
    launcher = None
    mapping: dict[int, str | None] = {}  # worker pid -> the segment of the train images it maps
    victim = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        launcher = launcher or _train_segment(proc.pid, nbytes)
        for pid in _children(proc.pid):
            mapping[pid] = mapping.get(pid) or _train_segment(pid, nbytes)
        if victim is None and launcher is not None:
            held = rows(db, "SELECT worker, arch_key FROM iotnas_trainings WHERE status = 'running'")
            for worker, key in held:
                pid = int(worker.split(":")[1])
                checkpoint = tmp_path / "shared-data-runs" / key.replace("/", "_") / "checkpoint.pt"
                if mapping.get(pid) == launcher and checkpoint.exists():
                    os.kill(pid, signal.SIGKILL)
                    victim = pid
                    break
        time.sleep(0.05)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert victim is not None, "no training was caught in progress"
    workers = {pid for pid, segment in mapping.items() if segment is not None}
    assert launcher is not None and {mapping[pid] for pid in workers} == {launcher}
    assert len(workers) >= 3, f"the killed worker was not replaced by one that maps the data: {mapping}"

    done = rows(db, "SELECT arch_key, epochs, accuracy, resumed_from_epochs FROM iotnas_trainings "
                    "WHERE status = 'done'")
    assert len(done) == 3
    assert any(resumed for *_, resumed in done), "the killed worker's training was not resumed"
    assert _leftovers({proc.pid, *mapping}) == []

    loaded = load_study(study)
    private = load_study_dataset(loaded)
    evaluator = TrainingEvaluator(loaded, private)
    with Store.open(f"sqlite:///{db}", study_name=loaded.name, create=False) as store:
        archs = {c.key: Arch.from_json(c.arch_json) for c in store.candidates()}
    for key, epochs, accuracy, _ in done:
        again = evaluator.evaluate(archs[key], epochs, workdir=tmp_path / "private" / key.replace("/", "_"))
        assert again.accuracy == accuracy, key


def test_a_killed_search_leaves_no_segment_behind(tmp_path):
    study = _study(tmp_path)
    nbytes = _train_bytes(study)
    proc = start_search(study, "--workers", "2")
    deadline = time.monotonic() + 600
    workers: set[int] = set()
    while proc.poll() is None and time.monotonic() < deadline and len(workers) < 2:
        workers = {pid for pid in _children(proc.pid) if _train_segment(pid, nbytes) is not None}
        time.sleep(0.05)
    assert len(workers) == 2, "the workers did not map the shared dataset"
    mapped = {path for pid in [*workers, proc.pid] for path in _segments(pid)}
    assert mapped and not any(Path(path).exists() for path in mapped), "a segment is still named in /dev/shm"
    for pid in [*workers, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    for pid in workers:
        while _segments(pid):  # until the kernel has taken its mappings down
            time.sleep(0.05)
    assert _leftovers({proc.pid, *workers}) == []
