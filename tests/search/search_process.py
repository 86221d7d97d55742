"""A real `iotnas search` process, killed with SIGKILL at a chosen moment, and its SQLite store read with SQL."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def start_search(study: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True)


def rows(db: Path, query: str) -> list[tuple]:
    """The rows of ``query``; none while the store's tables are not created yet."""
    try:
        with sqlite3.connect(db) as con:
            return con.execute(query).fetchall()
    except sqlite3.OperationalError:
        return []


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], *, timeout_s: float = 600) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.05)
    proc.wait(timeout=60)
    return False
