"""Run several search workers on one study: local processes, or Ray tasks on a cluster.

Workers do not talk to each other: they cooperate through the study store
(claims and heartbeats, see :mod:`iotnas.search.workers`), which is why a
worker can die at any point without losing anything but the epoch in progress.
What a worker receives is the study as loaded here (the tables of its file, as JSON,
with what the command line changed, such as ``--token-file``), its folder and the store
URL, all plain strings; what it returns is JSON. Workers also get the study's dataset, loaded once
by the launcher: local workers map it from shared memory; Ray tasks read it from Ray's object store,
one copy per node, as plain NumPy arrays and strings.
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import multiprocessing.queues
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from queue import Empty
from typing import TYPE_CHECKING, Any

from iotnas.errors import ConfigError, IotnasError

if TYPE_CHECKING:
    from iotnas.data import Dataset
    from iotnas.search.workflow import Callback, SearchEvent
    from iotnas.study import Study

log = logging.getLogger(__name__)


def run_worker(study_json: str, base_dir: str, store_url: str, threads: int | None = None,
               dataset: Dataset | None = None, callbacks: Sequence[Callback] = ()) -> str:
    """One worker: run the study to the end of its budget; returns the summary as JSON.

    ``threads``: torch threads of this worker's trainings, unless the study's ``[workers]`` sets them.
    ``dataset``: the study's dataset as the launcher loaded it (in shared memory); default: load it here.
    ``callbacks``: told of the worker's progress, as :func:`iotnas.search.run_search` tells its own.
    """
    from dataclasses import replace

    from iotnas.search import build_components, run_search
    from iotnas.study import parse_study

    study = parse_study(json.loads(study_json), base_dir=base_dir)
    if threads is not None and study.workers.threads is None:
        study = replace(study, workers=replace(study.workers, threads=threads))
    components = None if dataset is None else build_components(study, dataset=dataset)
    summary = run_search(study, store_url=store_url, components=components, callbacks=callbacks)
    return json.dumps(asdict(summary), default=str)


def _as_text(study: Study) -> tuple[str, str]:
    """What a worker gets: the study's tables as JSON (as loaded, overrides included) and its folder."""
    return json.dumps(study.to_dict(), sort_keys=True), study.base_dir


def _process_main(study_text: str, base_dir: str, store_url: str, threads: int, dataset: Dataset | None,
                  queue, worker: int) -> None:
    """A worker process: its progress events and then its summary (or its error) go to the launcher's queue."""
    from dataclasses import replace

    def tell(event: SearchEvent) -> None:
        queue.put(("event", replace(event, worker=worker)))

    def stopped(signum: int, frame: object) -> None:  # unwind, so that what the worker holds is given back
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)
    _stop_with_launcher(os.getppid())
    try:
        queue.put(("ok", run_worker(study_text, base_dir, store_url, threads, dataset, callbacks=(tell,))))
    except IotnasError as exc:
        queue.put(("error", str(exc)))


def _stop_with_launcher(launcher: int) -> None:
    """SIGTERM this worker once its launcher has ended, however it ended (even SIGKILL, which it
    cannot pass on): a worker whose progress nobody follows must not train on."""

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher watch", daemon=True).start()


def launcher_dataset(study: Study) -> Dataset | None:
    """The study's dataset, loaded once by the launcher for all its workers; ``None`` in tabular mode.

    Raises:
        ConfigError, DataError: the study's dataset cannot be loaded (before any worker starts).
    """
    if study.mode != "train":
        return None
    from iotnas.search.training import load_study_dataset

    return load_study_dataset(study)


def shared_study_dataset(study: Study) -> Dataset | None:
    """The study's dataset, loaded once and put in shared memory for the local workers to map.

    ``None`` when there is nothing to share (tabular mode) or this host cannot share it; each
    worker then loads its own copy.

    Raises:
        ConfigError, DataError: the study's dataset cannot be loaded (before any worker starts).
    """
    from iotnas.data import share_dataset

    dataset = launcher_dataset(study)
    return None if dataset is None else share_dataset(dataset)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Executor(abc.ABC):
    """Starts ``n`` workers on a study and waits for them."""

    @abc.abstractmethod
    def run(self, study: Study, store_url: str, *, workers: int, on_event: Callback | None = None) -> list[dict[str, Any]]:
        """Run the workers on ``study`` as loaded (command-line overrides included); each one's summary.

        ``on_event``: told of the workers' progress events where the executor can forward them, each
        with its worker's number, from the thread that called ``run``.
        """

    @abc.abstractmethod
    def check(self, workers: int) -> None:
        """Refuse a worker count this executor cannot run sensibly (ConfigError), before any work."""

    @abc.abstractmethod
    def auto_workers(self) -> int:
        """How many workers ``--workers auto`` starts: one single-threaded training per core."""

    def stop(self) -> None:
        """Stop the workers a running :meth:`run` started (their launcher is being stopped); callable
        from another thread. Workers that end with their launcher's process need nothing."""


class LocalExecutor(Executor):
    """Workers as fresh processes on this machine (one worker runs in-process).

    The processes map one copy of the study's dataset, loaded here (:func:`shared_study_dataset`;
    ``share_data=False``: each loads its own). A worker killed with SIGKILL (say, by the kernel's
    out-of-memory killer) is replaced, at most ``RESTARTS_PER_WORKER`` times per worker on average;
    the replacement takes over the training its predecessor held, from its last checkpoint. Other
    signals (SIGTERM, SIGINT: a stop was asked for) and crashes are not retried.
    """

    PER_CORE = 4  # more worker processes than this per core only slow each other down and fill memory
    RESTARTS_PER_WORKER = 1  # beyond this, a worker that keeps dying is a fault to report, not to retry
    POLL_S = 0.5  # seconds between looks at the workers' results while they run
    STOP_S = 30.0  # how long stopped workers get to give back their claims before they are killed

    def __init__(self, *, share_data: bool = True):
        self.share_data = share_data
        self._running: list[multiprocessing.process.BaseProcess] = []
        self._stopping = threading.Event()

    def auto_workers(self) -> int:
        return cores()

    def check(self, workers: int) -> None:
        most = self.PER_CORE * cores()
        if not 1 <= workers <= most:
            raise ConfigError(f"--workers: {workers} local workers on {most // self.PER_CORE} core(s); give 1 to "
                              f"{most} ({self.PER_CORE} per core), or spread them over machines with --executor ray")

    def run(self, study: Study, store_url: str, *, workers: int, on_event: Callback | None = None) -> list[dict[str, Any]]:
        self.check(workers)
        text, base = _as_text(study)
        if workers == 1:
            return [json.loads(run_worker(text, base, store_url, callbacks=() if on_event is None else (on_event,)))]
        dataset = shared_study_dataset(study) if self.share_data else None
        context = multiprocessing.get_context("spawn")  # no state forked from this process
        queue = context.Queue()
        threads = max(1, cores() // workers)  # the cores shared out: threads of one training wait on each other

        numbers = itertools.count(1)  # each process its own number, a replacement a new one
        restarts, died, messages = self.RESTARTS_PER_WORKER * workers, [], []

        def start() -> multiprocessing.process.BaseProcess:
            process = context.Process(target=_process_main, daemon=False,
                                      args=(text, base, store_url, threads, dataset, queue, next(numbers)))
            process.start()
            return process

        def collect() -> None:  # a worker cannot exit while its messages are stuck in a full pipe
            for status, payload in _drain(queue):
                if status != "event":
                    messages.append((status, payload))
                elif on_event is not None:
                    on_event(payload)

        self._stopping.clear()
        running = self._running = [start() for _ in range(workers)]
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=self.POLL_S)
            collect()
            for process in [p for p in running if p.exitcode is not None]:
                running.remove(process)
                if process.exitcode == -signal.SIGKILL and restarts > 0 and not self._stopping.is_set():
                    restarts -= 1
                    log.warning("worker %d was killed (SIGKILL); starting another", process.pid)
                    running.append(start())
                elif process.exitcode != 0:
                    died.append(process.exitcode)
        collect()
        if self._stopping.is_set():
            raise IotnasError("the workers were stopped; run the same command again to resume the study")
        errors = [payload for status, payload in messages if status == "error"]
        if errors:
            raise IotnasError(f"a worker failed: {errors[0]}")
        if died:
            raise IotnasError(f"{len(died)} worker(s) died (exit codes {died}); "
                              "run the same command again to resume the study")
        return [json.loads(payload) for _, payload in messages]

    def stop(self) -> None:
        """SIGTERM to every worker still running (each gives back the job it holds), SIGKILL to any
        still there after ``STOP_S``; no replacement is started."""
        self._stopping.set()
        running = list(self._running)
        for process in running:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + self.STOP_S
        for process in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()


def _drain(queue: multiprocessing.queues.Queue) -> list[tuple[str, Any]]:
    """Every message the workers have put so far."""
    messages = []
    while True:
        try:
            messages.append(queue.get_nowait())
        except Empty:
            return messages


def _ray_worker(study_text: str, base_dir: str, store_url: str, threads: int, data: dict[str, Any] | None) -> str:
    """One Ray task: :func:`run_worker` on the dataset the driver put in the object store (``data``:
    Ray hands it over as read-only views of its buffer on this node), or loading its own (``None``)."""
    from iotnas.data import dataset_from_arrays

    dataset = None if data is None else dataset_from_arrays(data)
    return run_worker(study_text, base_dir, store_url, threads, dataset)


class RayExecutor(Executor):
    """Workers as Ray tasks: a local Ray by default, or an existing cluster by address.

    The driver loads the study's dataset once and puts it in Ray's object store as plain arrays
    (:func:`iotnas.data.dataset_arrays`); each node fetches it once and its tasks read that copy in
    place (``share_data=False``: each task loads its own, which needs the data on every node).
    """

    def __init__(self, *, address: str | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 share_data: bool = True):
        self.address = address
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.share_data = share_data

    MOST = 10_000  # tasks one search submits at once

    def auto_workers(self) -> int:
        """One worker per ``cpus_per_worker`` of this machine (a cluster: pass a count)."""
        return max(1, int(cores() // max(self.cpus_per_worker, 1e-9)))

    def check(self, workers: int) -> None:
        if not 1 <= workers <= self.MOST:
            raise ConfigError(f"--workers: {workers} Ray workers; give 1 to {self.MOST:,}")

    def run(self, study: Study, store_url: str, *, workers: int, on_event: Callback | None = None) -> list[dict[str, Any]]:
        """Ray tasks' progress is not forwarded (``on_event`` is not called): follow them in the store."""
        self.check(workers)
        # Ray's crash handler would take SIGTERM from the search's own and abort the process 3 s later
        # (SIGABRT and a stack dump) while a stopped search is still giving back what it holds.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'iotnas[ray]'") from None
        text, base = _as_text(study)
        dataset = launcher_dataset(study) if self.share_data else None  # a data error stops us before Ray starts
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {self.address or 'a new local Ray'}: {exc}") from None
        try:
            from iotnas.data import dataset_arrays

            data = None if dataset is None else ray.put(dataset_arrays(dataset))  # one reference for every task
            del dataset  # the object store holds it now; this process need not keep a second copy
            task = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_retries=0)(_ray_worker)
            threads = max(1, int(self.cpus_per_worker))
            refs = [task.remote(text, base, store_url, threads, data) for _ in range(workers)]
            try:
                return [json.loads(r) for r in ray.get(refs)]
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, IotnasError) else exc
                raise IotnasError(f"a Ray worker failed: {str(cause).strip().splitlines()[-1]}") from None
            except ray.exceptions.WorkerCrashedError:
                raise IotnasError("a Ray worker died; run the same command again to resume the study") from None
        finally:
            if started_here:
                ray.shutdown()


def make_executor(name: str, *, address: str | None = None, cpus_per_worker: float = 1.0,
                  gpus_per_worker: float = 0.0) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    raise ConfigError(f"executor {name!r} is not one of local, ray")


def parse_workers(text: str, executor: Executor, *, trains: bool = True) -> int:
    """``--workers``: a count, or ``auto`` (the executor's one single-threaded training per core; one
    worker for a study that ``trains`` nothing, whose work is lookups a second process would only repeat).

    Raises:
        ConfigError: neither a whole number nor ``auto``, or a count the executor refuses.
    """
    if text.strip().lower() == "auto":
        return executor.auto_workers() if trains else 1
    try:
        workers = int(text)
    except ValueError:
        raise ConfigError(f"--workers (or IOTNAS_WORKERS): {text!r} is not a number of workers; give one (e.g. 2) "
                          "or auto") from None
    executor.check(workers)
    return workers
