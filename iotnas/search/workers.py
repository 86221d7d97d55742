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
from datetime import datetime, timedelta, timezone
from typing import Iterable

from iotnas.errors import IotnasError
from iotnas.store import Store, Training, TrainingStatus
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


def abandoned(training: Training, settings: WorkerSettings) -> bool:
    """Whether a claimed training's worker has stopped: its process here is gone, or it has not
    beaten within ``stale_after_s``. Such a training is interrupted; any worker may take it over."""
    if dead_workers([training.worker]):
        return True
    return training.heartbeat_at is None or training.heartbeat_at < stale_before(settings)


class Heartbeat:
    """Context manager: refresh a claimed training's heartbeat from a background thread."""

    def __init__(self, store: Store, arch_key: str, epochs: float, *, worker: str, interval_s: float):
        self._args = (arch_key, epochs)
        self._store = store
        self._worker = worker
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {arch_key}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._store.heartbeat(*self._args, worker=self._worker):
                    log.warning("training %s was taken over by another worker", self._args[0])
                    return
            except IotnasError as exc:  # the database is away: keep training, retry at the next beat
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
        return training is None or training.worker == self.worker or abandoned(training, self.settings)

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
        if self.store.url in ("sqlite://", "sqlite:///:memory:"):  # one process by definition
            return contextlib.nullcontext()
        return Heartbeat(self.store, key, epochs, worker=self.worker, interval_s=self.settings.heartbeat_s)

    def wait(self) -> None:
        """Let other workers progress before looking at the store again."""
        time.sleep(self.settings.poll_s)
