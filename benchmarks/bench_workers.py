"""Local workers on CIFAR-10: memory with a shared dataset, and search-level trainings per hour.

    python benchmarks/bench_workers.py memory [--workers 2] [--steps 20] [--data DIR]
    python benchmarks/bench_workers.py throughput [--trainings 8] [--steps 300] [--data DIR]

``memory``: the same search (two short trainings of compact models, all 50,000 training and 10,000
test images) runs twice with 2 local workers, as ``iotnas search --workers 2`` does it: first with
each worker loading its own copy of the dataset (the baseline), then with the launcher's one copy
in shared memory. Every 0.2 s the script reads ``/proc/PID/smaps_rollup`` of the launcher and of
each worker: USS (private pages: what the process alone costs), PSS (shared pages divided among
the processes that map them) and RSS; the table gives each figure's peak, and the peak over time of
the summed PSS, which is what the search costs the machine.

``throughput``: one study (compact and probenet models under 32 KiB, CIFAR-10, the default recipe,
``--trainings`` trainings of ``--steps`` steps each, the same models in both runs) searched with
``iotnas search --workers 1`` (the default: one in-process worker whose trainings use every core)
and then ``--workers auto`` (one single-threaded worker per core), each into a fresh store whose
pool is prepared beforehand; the table gives trainings per hour of the search command's wall time
and their ratio. Meant for an idle machine: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
TRAIN_IMAGES = 50_000  # CIFAR-10's train split
BATCH = 128  # the default recipe's batch size (TrainConfig.batch_size)
MIB = 1 << 20
SAMPLE_S = 0.2  # seconds between memory samples

STUDY = """\
name = "workers"
seed = 4
store = "workers.db"
[data]
dataset = "{data}"
[device]
kind = "local"
[constraints]
max_weight_bytes = 32768
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
class Peaks:
    """Peak memory figures of one process, in bytes."""

    uss: int = 0
    pss: int = 0
    rss: int = 0

    def update(self, figures: dict[str, int]) -> None:
        self.uss = max(self.uss, figures["Private_Clean"] + figures["Private_Dirty"])
        self.pss = max(self.pss, figures["Pss"])
        self.rss = max(self.rss, figures["Rss"])


def _rollup(pid: int) -> dict[str, int] | None:
    """``/proc/PID/smaps_rollup`` in bytes; None once the process has ended."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return None
    figures = {}
    for line in lines:
        name, value, *_ = line.split()
        figures[name.rstrip(":")] = int(value) * 1024
    return figures or None


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def _is_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
    return "spawn_main" in command  # not multiprocessing's resource tracker


def _search_memory(study: Path, *, workers: int, share: bool) -> tuple[Peaks, dict[int, Peaks], int, float]:
    """Run the search in a child process; peaks of the launcher and of each worker, peak summed PSS, wall s."""
    command = [sys.executable, __file__, "_search", str(study), "--workers", str(workers)]
    if not share:
        command.append("--copy-per-worker")
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    launcher, per_worker, total = Peaks(), {}, 0
    while proc.poll() is None:
        summed = 0
        for pid, peaks in [(proc.pid, launcher)] + [(c, None) for c in _children(proc.pid) if _is_worker(c)]:
            figures = _rollup(pid)
            if figures is None:
                continue
            (peaks or per_worker.setdefault(pid, Peaks())).update(figures)
            summed += figures["Pss"]
        total = max(total, summed)
        time.sleep(SAMPLE_S)
    if proc.returncode != 0:
        raise SystemExit(f"the search failed (exit {proc.returncode})")
    return launcher, per_worker, total, time.perf_counter() - started


def _each(peaks: list[Peaks], figure: str) -> str:
    return ", ".join(f"{getattr(p, figure) / MIB:.0f}" for p in peaks)


def _search(study_file: str, workers: int, copy_per_worker: bool) -> None:
    """What ``iotnas search --workers N`` does (prepare here, then the local workers), with the sharing switch."""
    from iotnas.executors import LocalExecutor
    from iotnas.search import prepare_search, store_location
    from iotnas.study import load_study

    study = load_study(Path(study_file))
    url = store_location(study)
    prepare_search(study, store_url=url)
    LocalExecutor(share_data=not copy_per_worker).run(study, url, workers=workers)


def memory(args: argparse.Namespace) -> None:
    from iotnas.data import load_dataset

    dataset = load_dataset(args.data, verify=False)
    data_bytes = sum(t.nbytes for t in (dataset.train_images, dataset.train_labels, dataset.test_images,
                                        dataset.test_labels))
    del dataset
    print(f"machine: {os.cpu_count()} cores; {_load()}; dataset {args.data}: {data_bytes / MIB:.1f} MiB of "
          f"uint8 images and int64 labels; {args.workers} local workers, {args.workers} trainings of {args.steps} "
          f"steps\n", flush=True)
    print("| dataset | launcher PSS MiB | worker USS MiB (each) | worker PSS MiB (each) | worker RSS MiB (each) "
          "| peak total PSS MiB | wall s |")
    print("|---|---|---|---|---|---|---|")
    totals = {}
    for share in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            study = _study(Path(folder), data=args.data, laws=["compact/s2"], trainings=args.workers,
                           steps=args.steps)
            launcher, workers, total, wall = _search_memory(study, workers=args.workers, share=share)
        name = "shared by the launcher" if share else "a copy per worker (baseline)"
        each = sorted(workers.values(), key=lambda p: p.uss)
        totals[share] = total
        print(f"| {name} | {launcher.pss / MIB:.0f} | {_each(each, 'uss')} | {_each(each, 'pss')} | {_each(each, 'rss')} "
              f"| {total / MIB:.0f} | {wall:.1f} |", flush=True)
    saved = totals[False] - totals[True]
    print(f"\nshared / copy per worker, peak total PSS: {totals[True] / totals[False]:.2f} "
          f"({saved / MIB:.0f} MiB less); {_load()}")


# --------------------------------------------------------------------------- throughput


def throughput(args: argparse.Namespace) -> None:
    from iotnas.executors import cores
    from iotnas.search import prepare_search
    from iotnas.study import load_study

    print(f"machine: {os.cpu_count()} cores ({cores()} usable); {_load()}; {args.trainings} trainings of "
          f"{args.steps} steps ({args.steps * BATCH / TRAIN_IMAGES:.3f} epochs) on {args.data}\n", flush=True)
    print("| --workers | workers | wall s | trainings per hour | vs --workers 1 |")
    print("|---|---|---|---|---|")
    base = None
    for given in ("1", "auto"):
        with tempfile.TemporaryDirectory() as folder:
            study = _study(Path(folder), data=args.data, laws=args.laws, trainings=args.trainings, steps=args.steps)
            prepare_search(load_study(study))  # pool and costs, outside the timing
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "iotnas", "search", str(study), "--workers", given], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - started
        per_hour = args.trainings * 3600 / wall
        base = base or per_hour
        count = 1 if given == "1" else cores()
        print(f"| {given} | {count} | {wall:.1f} | {per_hour:.1f} | {per_hour / base:.2f} |", flush=True)
    print(f"\n{_load()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mem = commands.add_parser("memory", help="resident memory of a 2-worker search, copy per worker vs shared")
    mem.add_argument("--workers", type=int, default=2)
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
    inner.add_argument("--copy-per-worker", action="store_true")
    args = parser.parse_args()
    if args.command == "_search":
        _search(args.study, args.workers, args.copy_per_worker)
    elif args.command == "memory":
        memory(args)
    else:
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
