"""Workers on CIFAR-10: memory with a shared dataset (local and Ray), and search-level trainings per hour.

    python benchmarks/bench_workers.py memory [--workers 2] [--steps 20] [--executors local,ray] [--data DIR]
    python benchmarks/bench_workers.py throughput [--trainings 8] [--steps 300] [--data DIR]

``memory``: the same search (two short trainings of compact models, all 50,000 training and 10,000
test images) runs twice with 2 local workers, as ``iotnas search --workers 2`` does it: first with
each worker loading its own copy of the dataset (the baseline), then with the launcher's one copy
in shared memory. Then the same pair with 2 Ray tasks on a local Ray (``--executor ray``): each task
loading its own copy (the baseline), then the driver's one copy in Ray's object store. Every 0.2 s
the script reads the memory of the launcher and of each worker (psutil, from
``/proc/PID/smaps_rollup``): USS (private pages: what the process alone costs) and PSS (shared
pages split among the processes that map them). The table gives the medians while every worker is
alive, each worker's peak USS, and the summed PSS (what the search costs the machine): its median
while the workers run, and its peak. With Ray, the launcher is the driver, the workers are the
processes running a worker task, and the summed PSS also counts Ray's own processes (its store,
scheduler and idle workers: every process the driver started).

``throughput``: one study (compact and probenet models under 64 KiB, CIFAR-10, the default recipe,
``--trainings`` trainings of ``--steps`` steps each, the same models in both runs) searched with
``iotnas search --workers 1`` (the default: one in-process worker whose trainings use every core)
and then ``--workers auto`` (one single-threaded worker per core), each into a fresh store whose
pool is prepared beforehand; the table gives trainings per hour of the search command's wall time
and their ratio, and, where the search starts worker processes, the CPU time the launching process
spent (it only shows their progress) against theirs (psutil, read every half second). Meant for an idle
machine: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
TRAIN_IMAGES = 50_000  # CIFAR-10's train split
BATCH = 128  # the default recipe's batch size (TrainConfig.batch_size)
MIB = 1 << 20
SAMPLE_S = 0.2  # seconds between memory samples
RAY_TASK_TITLE = "ray::_ray_worker"  # Ray titles a process after the task it runs (iotnas.executors._ray_worker)

STUDY = """\
name = "workers"
seed = 4
store = "workers.db"
[data]
dataset = "{data}"
[device]
kind = "local"
[constraints]
max_weight_bytes = 65536
[space]
laws = {laws}
pool_per_law = 16
[strategy]
name = "random"
[budget]
trainings = {trainings}
epochs = [{epochs}]
"""


def _study(folder: Path, *, data: Path, laws: list[str], trainings: int, steps: int) -> Path:
    epochs = steps * BATCH / TRAIN_IMAGES
    path = folder / "workers.toml"
    path.write_text(STUDY.format(data=data.resolve(), laws=str(laws).replace("'", '"'), trainings=trainings,
                                 epochs=f"{epochs:.6f}"))
    return path


def _load() -> str:
    return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- memory


@dataclass
class Memory:
    """Samples of one process's memory (bytes): USS (private pages), PSS (shared pages split among
    the processes that map them), RSS; and those taken while every worker was alive."""

    uss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    running_uss: list[int] = field(default_factory=list)

    def add(self, info, *, running: bool) -> None:
        self.uss.append(info.uss)
        self.pss.append(info.pss)
        self.rss.append(info.rss)
        if running:
            self.running_uss.append(info.uss)


@dataclass(frozen=True)
class Footprint:
    """The memory of one search: its launcher's, each worker's, and the PSS of them all."""

    launcher: Memory
    workers: list[Memory]
    totals: list[int]  # summed PSS of each sample
    running_totals: list[int]  # summed PSS of the samples taken while every worker was alive
    wall_s: float


def _sample(processes: list[psutil.Process]) -> dict[psutil.Process, object]:
    found = {}
    for process in processes:
        try:
            found[process] = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _processes(launcher: psutil.Process, executor: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The launcher's workers now, and the other processes whose memory the search costs."""
    if executor == "local":
        return [c for c in launcher.children() if "spawn_main" in _title(c)], []  # not the resource tracker
    started = launcher.children(recursive=True)  # Ray's processes, and the workers its scheduler started
    workers = [c for c in started if _title(c).split(" ")[0] == RAY_TASK_TITLE]
    return workers, [c for c in started if c not in workers]


def _search_memory(study: Path, *, workers: int, share: bool, executor: str) -> Footprint:
    """Run the search in a child process, sampling the memory of it and of its workers."""
    command = [sys.executable, __file__, "_search", str(study), "--workers", str(workers), "--executor", executor]
    if not share:
        command.append("--copy-per-worker")
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    launcher = psutil.Process(proc.pid)
    memory: dict[int, Memory] = {}
    totals, running_totals = [], []
    while proc.poll() is None:
        try:
            spawned, others = _processes(launcher, executor)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            break
        infos = _sample([launcher, *spawned])
        running = sum(p is not launcher for p in infos) == workers
        for process, info in infos.items():
            memory.setdefault(process.pid, Memory()).add(info, running=running)
        totals.append(sum(info.pss for info in [*infos.values(), *_sample(others).values()]))
        if running:
            running_totals.append(totals[-1])
        time.sleep(SAMPLE_S)
    if proc.wait() != 0:
        raise SystemExit(f"the search failed (exit {proc.returncode})")
    return Footprint(memory.pop(proc.pid, Memory()), list(memory.values()), totals, running_totals,
                     time.perf_counter() - started)


def _mib(values: list[int], pick=max) -> str:
    return f"{pick(values) / MIB:.0f}" if values else "-"


def _search(study_file: str, workers: int, executor: str, copy_per_worker: bool) -> None:
    """What ``iotnas search --workers N --executor E`` does (prepare here, then the workers), with the sharing
    switch."""
    from iotnas.executors import LocalExecutor, RayExecutor
    from iotnas.search import prepare_search, store_location
    from iotnas.study import load_study

    study = load_study(Path(study_file))
    url = store_location(study)
    prepare_search(study, store_url=url)
    kind = LocalExecutor if executor == "local" else RayExecutor
    kind(share_data=not copy_per_worker).run(study, url, workers=workers)


def memory(args: argparse.Namespace) -> None:
    from iotnas.data import load_dataset

    dataset = load_dataset(args.data, verify=False)
    data_bytes = sum(t.nbytes for t in (dataset.train_images, dataset.train_labels, dataset.test_images,
                                        dataset.test_labels))
    del dataset
    executors = [e for e in args.executors.split(",") if e]
    if not executors or set(executors) - set(SHARED_BY):
        raise SystemExit(f"--executors: {args.executors!r}; give a comma-separated list of local, ray")
    print(f"machine: {os.cpu_count()} cores; {_load()}; dataset {args.data}: {data_bytes / MIB:.1f} MiB of "
          f"uint8 images and int64 labels; {args.workers} workers ({', '.join(executors)}), {args.workers} "
          f"trainings of {args.steps} steps\n", flush=True)
    print("| executor | dataset | launcher USS MiB, workers running (median) "
          "| worker USS MiB, workers running (median, each) | worker USS MiB (peak, each) "
          "| total PSS MiB, workers running (median) | total PSS MiB (peak) | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    found = {}
    for executor in executors:
        for share in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                study = _study(Path(folder), data=args.data, laws=["compact/s2"], trainings=args.workers,
                               steps=args.steps)
                found[executor, share] = run = _search_memory(study, workers=args.workers, share=share,
                                                              executor=executor)
            median = statistics.median
            print(f"| {executor} | {SHARED_BY[executor] if share else 'a copy per worker (baseline)'} "
                  f"| {_mib(run.launcher.running_uss, median)} "
                  f"| {', '.join(_mib(w.running_uss, median) for w in run.workers)} "
                  f"| {', '.join(_mib(w.uss) for w in run.workers)} | {_mib(run.running_totals, median)} "
                  f"| {_mib(run.totals)} | {run.wall_s:.1f} |", flush=True)
    print()
    for executor in executors:
        copy, shared = (statistics.median(found[executor, s].running_totals) for s in (False, True))
        peaks = max(found[executor, True].totals) / max(found[executor, False].totals)
        print(f"{executor}: shared / copy per worker: total PSS while the workers run {shared / copy:.2f} "
              f"({(copy - shared) / MIB:.0f} MiB less), at its peak {peaks:.2f}")
    print(_load())


# --------------------------------------------------------------------------- throughput


SHARED_BY = {"local": "shared by the launcher", "ray": "the driver's copy in the object store"}


@dataclass(frozen=True)
class SearchCpu:
    """CPU seconds (user + system) of a search's launcher and of its worker processes together."""

    launcher_s: float
    workers_s: float

    @property
    def launcher_share(self) -> float:
        """The launcher's CPU as a fraction of its workers': what it takes from the trainings."""
        return self.launcher_s / self.workers_s if self.workers_s else 0.0


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system  # its own, not its children's


def _cpu_while_running(proc: subprocess.Popen) -> SearchCpu:
    """Wait for the search, reading its launcher's and workers' CPU time every half second (the last
    reading of each process counts: at most half a second of it is missed)."""
    launcher = psutil.Process(proc.pid)
    last: dict[int, float] = {}
    launcher_s = 0.0
    while proc.poll() is None:
        try:
            launcher_s = _cpu_s(launcher)
            workers = [c for c in launcher.children() if "spawn_main" in _title(c)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            break
        for worker in workers:
            try:
                last[worker.pid] = _cpu_s(worker)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        time.sleep(0.5)
    proc.wait()
    return SearchCpu(launcher_s, sum(last.values()))


def throughput(args: argparse.Namespace) -> None:
    from iotnas.executors import cores
    from iotnas.search import prepare_search
    from iotnas.study import load_study

    print(f"machine: {os.cpu_count()} cores ({cores()} usable); {_load()}; {args.trainings} trainings of "
          f"{args.steps} steps ({args.steps * BATCH / TRAIN_IMAGES:.3f} epochs) on {args.data}\n", flush=True)
    print("| --workers | workers | wall s | trainings per hour | vs --workers 1 "
          "| launcher CPU s / workers' CPU s (launcher's share) |")
    print("|---|---|---|---|---|---|")
    base = None
    for given in ("1", "auto"):
        with tempfile.TemporaryDirectory() as folder:
            study = _study(Path(folder), data=args.data, laws=args.laws, trainings=args.trainings, steps=args.steps)
            prepare_search(load_study(study))  # pool and costs, outside the timing
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study), "--workers", given],
                                    stdout=subprocess.DEVNULL)
            cpu = _cpu_while_running(proc)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"the search failed (exit {proc.returncode})")
        per_hour = args.trainings * 3600 / wall
        base = base or per_hour
        count = 1 if given == "1" else cores()
        share = f"{cpu.launcher_s:.1f} / {cpu.workers_s:.1f} ({cpu.launcher_share:.1%})" if cpu.workers_s else "-"
        print(f"| {given} | {count} | {wall:.1f} | {per_hour:.1f} | {per_hour / base:.2f} | {share} |", flush=True)
    print(f"\n{_load()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mem = commands.add_parser("memory", help="resident memory of a 2-worker search, copy per worker vs shared")
    mem.add_argument("--workers", type=int, default=2)
    mem.add_argument("--executors", default="local,ray", help="comma-separated: local, ray")
    mem.add_argument("--steps", type=int, default=20, help="training steps per training")
    mem.add_argument("--data", type=Path, default=DEFAULT_DATA)
    thr = commands.add_parser("throughput", help="search-level trainings per hour, --workers auto vs 1")
    thr.add_argument("--trainings", type=int, default=8)
    thr.add_argument("--steps", type=int, default=300, help="training steps per training")
    thr.add_argument("--laws", nargs="+", default=["compact/s2", "probenet/s2"])
    thr.add_argument("--data", type=Path, default=DEFAULT_DATA)
    inner = commands.add_parser("_search")  # the measured search process of `memory`
    inner.add_argument("study")
    inner.add_argument("--workers", type=int, required=True)
    inner.add_argument("--executor", choices=("local", "ray"), default="local")
    inner.add_argument("--copy-per-worker", action="store_true")
    args = parser.parse_args()
    if args.command == "_search":
        _search(args.study, args.workers, args.executor, args.copy_per_worker)
    elif args.command == "memory":
        memory(args)
    else:
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
