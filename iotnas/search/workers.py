"""Who is working on a study: worker identities, heartbeats, and telling dead workers from slow ones.

Several workers (processes, Ray tasks, machines) may run one study against one
store. A worker claims a training in the store, then keeps a heartbeat while it
trains; a training whose heartbeat stops is taken over by another worker after
``stale_after_s`` and resumed from its last checkpoint. On one host, a worker
whose process is gone is recognised at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from iotnas.errors import IotnasError
from iotnas.store import Job, Store, Training, TrainingStatus
from iotnas.study import WorkerSettings

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """``host:pid:nonce``: unique, and tells which host and process to check for liveness."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_workers(workers: Iterable[str | None]) -> list[str]:
    """Workers on this host whose process no longer exists."""
    host = socket.gethostname()
    dead = []
    for worker in workers:
        if not worker:
            continue
        parts = worker.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(worker)
        except PermissionError:
            pass  # alive, owned by someone else
    return dead


def stale_before(settings: WorkerSettings) -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=settings.stale_after_s)


def abandoned(claim: Training | Job, settings: WorkerSettings) -> bool:
    """Whether a claimed training's (or job's) worker has stopped: its process here is gone, or it has
    not beaten within ``stale_after_s``. Such a claim is interrupted; any worker may take it over."""
    if dead_workers([claim.worker]):
        return True
    return claim.heartbeat_at is None or claim.heartbeat_at < stale_before(settings)


class Heartbeat:
    """Context manager: refresh a claim (a training's or a job's) from a background thread.

    ``beat()`` refreshes it in the store and returns False once another worker has taken it over.
    """

    def __init__(self, beat: Callable[[], bool], *, name: str, interval_s: float):
        self._beat = beat
        self._name = name
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._beat():
                    log.warning("%s was taken over by another worker", self._name)
                    return
            except IotnasError as exc:  # the database is away: keep working, retry at the next beat
                log.warning("heartbeat failed: %s", exc)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Coordinator:
    """One worker's view of a study's trainings: which are done, and which another live worker holds.

    Trainings are claimed in the store (one worker each) and kept alive by a heartbeat; a
    training whose worker died (here: at once; elsewhere: after ``stale_after_s``) is taken over.
    """

    def __init__(self, store: Store, settings: WorkerSettings, worker: str):
        self.store = store
        self.settings = settings
        self.worker = worker
        self.done: dict[tuple[str, float], float] = {}  # (key, epochs) -> accuracy of finished trainings
        self.running: dict[tuple[str, float], Training] = {}  # held by some worker, or failed

    def refresh(self) -> None:
        """Read every worker's trainings from the store."""
        trainings = self.store.trainings()
        self.done = {(t.arch_key, t.epochs): float(t.accuracy) for t in trainings if t.status == TrainingStatus.DONE}
        self.running = {(t.arch_key, t.epochs): t for t in trainings
                        if t.status in (TrainingStatus.RUNNING, TrainingStatus.FAILED)}

    def can_take(self, key: str, epochs: float) -> bool:
        """Whether no live worker holds this training (new, failed, or its worker stopped beating)."""
        training = self.running.get((key, epochs))
        return (training is None or training.status == TrainingStatus.FAILED or training.worker == self.worker
                or abandoned(training, self.settings))

    def claim(self, key: str, epochs: float) -> bool:
        """Claim a training in the store; False when another live worker holds it."""
        holder = self.running.get((key, epochs))
        dead = dead_workers([holder.worker]) if holder is not None else []
        return self.store.claim_training(key, epochs, worker=self.worker, stale_before=stale_before(self.settings),
                                         dead_workers=dead)

    def release(self, key: str, epochs: float) -> None:
        """Give back a training this worker claimed and will not run (its candidate was rejected)."""
        self.store.release_training(key, epochs, worker=self.worker)

    def heartbeat(self, key: str, epochs: float):
        """A context that keeps a claimed training's heartbeat while it runs."""
        return self._keep_alive(lambda: self.store.heartbeat(key, epochs, worker=self.worker), f"training {key}")

    def _keep_alive(self, beat: Callable[[], bool], name: str):
        if self.store.url in ("sqlite://", "sqlite:///:memory:"):  # one process by definition
            return contextlib.nullcontext()
        return Heartbeat(beat, name=name, interval_s=self.settings.heartbeat_s)

    # Jobs: units of work other than trainings (the precision stage's), shared out the same way.

    def claim_job(self, name: str) -> bool:
        """Claim a job in the store; False when another live worker holds it or it is done."""
        holders = [j.worker for j in self.store.jobs() if j.name == name]
        return self.store.claim_job(name, worker=self.worker, stale_before=stale_before(self.settings),
                                    dead_workers=dead_workers(holders))

    def job_done(self, name: str) -> bool:
        return any(j.name == name and j.status == TrainingStatus.DONE for j in self.store.jobs())

    def job_heartbeat(self, name: str):
        """A context that keeps a claimed job's heartbeat while it runs."""
        return self._keep_alive(lambda: self.store.beat_job(name, worker=self.worker), name)

    def finish_job(self, name: str) -> None:
        self.store.finish_job(name, worker=self.worker)

    def release_job(self, name: str) -> None:
        self.store.release_job(name, worker=self.worker)

    def wait(self) -> None:
        """Let other workers progress before looking at the store again."""
        time.sleep(self.settings.poll_s)
