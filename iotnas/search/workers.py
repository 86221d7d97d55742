"""Who is working on a study: worker identities, heartbeats, and telling dead workers from slow ones.

Several workers (processes, Ray tasks, machines) may run one study against one
store. A worker claims a training in the store, then keeps a heartbeat while it
trains; a training whose heartbeat stops is taken over by another worker after
``stale_after_s`` and resumed from its last checkpoint. On one host, a worker
whose process is gone is recognised at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterable

from iotnas.errors import IotnasError
from iotnas.store import Store
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
