"""A real search process killed mid-training resumes to the same results as an uninterrupted one."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

STUDY = """\
name = "killme"
store = "killme.db"
seed = 7
[data]
dataset = "digits"
limit = 256
[device]
kind = "local"
runtime = "onnxruntime"
[constraints]
max_weight_bytes = 16384
max_latency_ms = 50.0
[space]
laws = ["mobilenetv2/s6", "probenet/s2"]
pool_per_law = 6
[strategy]
name = "random"
[budget]
trainings = 2
epochs = [8]
[training]
batch_size = 64
"""


def _write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / "killme.toml"
    study.write_text(STUDY)
    return study


def _search(study: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True, **kwargs)


def _rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(query).fetchall()


def _running(db: Path) -> int:
    try:
        return _rows(db, "SELECT count(*) FROM iotnas_trainings WHERE status='running'")[0][0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _results(db: Path) -> list[tuple]:
    return _rows(db, "SELECT t.arch_key, t.epochs, t.accuracy, c.proposed_index FROM iotnas_trainings t "
                     "JOIN iotnas_candidates c ON c.key = t.arch_key WHERE t.status = 'done' ORDER BY c.proposed_index")


def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    # The uninterrupted reference.
    reference = _write(tmp_path / "reference")
    proc = _search(reference)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    expected = _results(reference.parent / "killme.db")
    assert len(expected) == 2

    # The same study, killed (SIGKILL) once its first training has written a checkpoint.
    study = _write(tmp_path / "killed")
    db = study.parent / "killme.db"
    proc = _search(study)
    deadline = time.monotonic() + 600
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        checkpoints = list((study.parent / "killme-runs").glob("*/checkpoint.pt"))
        running = db.exists() and _running(db)
        if checkpoints and running:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed, "the search finished before it could be interrupted"
    assert _running(db) == 1

    # Resume: same proposals, same accuracies, each model trained once, none over the limits.
    proc = _search(study)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert _results(db) == expected
    assert _rows(db, "SELECT count(*) FROM iotnas_trainings")[0][0] == len(expected)
    over = _rows(db, "SELECT count(*) FROM iotnas_trainings t JOIN iotnas_candidates c ON c.key = t.arch_key "
                     "WHERE c.n_values * 4 > 16384")
    assert over[0][0] == 0
