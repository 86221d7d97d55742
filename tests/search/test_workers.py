"""Several workers on one study (SQLite and a real PostgreSQL server); one is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from iotnas.search import prepare_search
from iotnas.study import load_study

STUDY = """\
name = "shared"
seed = 3
[data]
dataset = "digits"
limit = 256
[device]
kind = "local"
min_s = 0.05
[constraints]
max_weight_bytes = 16384
[space]
laws = ["mobilenetv2/s6", "probenet/s2"]
pool_per_law = 8
[strategy]
name = "random"
[budget]
trainings = 5
epochs = [8]
[training]
batch_size = 64
[workers]
heartbeat_s = 0.5
stale_after_s = 5
poll_s = 0.2
"""


def _query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as con:
            return [tuple(r) for r in con.execute(text(sql))]
    except Exception:  # tables not there yet
        return []
    finally:
        engine.dispose()


def _runs(folder: Path, url: str) -> Path:
    """Checkpoints live beside a SQLite store, or beside the study file for a server store."""
    return folder / ("shared-runs" if url.startswith("sqlite") else "shared-runs")


def _worker(study: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study), "--store", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _three_workers_one_killed(tmp_path: Path, url: str) -> None:
    study_file = tmp_path / "shared.toml"
    study_file.write_text(STUDY)
    prepare_search(load_study(study_file), store_url=url)
    workers = [_worker(study_file, url) for _ in range(3)]
    by_pid = {p.pid: p for p in workers}
    victim = None
    deadline = time.monotonic() + 600
    while victim is None and time.monotonic() < deadline:
        held = _query(url, "SELECT worker, arch_key FROM iotnas_trainings WHERE status = 'running'")
        for worker, key in held:
            pid = int(worker.split(":")[1])
            checkpoint = _runs(tmp_path, url) / key.replace("/", "_") / "checkpoint.pt"
            if pid in by_pid and checkpoint.exists():
                os.kill(pid, signal.SIGKILL)
                victim = (pid, key)
                break
        time.sleep(0.05)
    assert victim is not None, "no training was caught in progress"
    for p in workers:
        p.wait(timeout=900)
    survivors = [p for p in workers if p.pid != victim[0]]
    assert all(p.returncode == 0 for p in survivors), [p.stderr.read() for p in survivors]

    done = _query(url, "SELECT arch_key, epochs, status, resumed_from_epochs FROM iotnas_trainings")
    assert len(done) == 5 and all(status == "done" for _, _, status, _ in done)
    assert len({(k, e) for k, e, _, _ in done}) == 5  # each trained once, no duplicate
    resumed = {k: r for k, _, _, r in done}
    assert resumed[victim[1]] and resumed[victim[1]] > 0  # the killed worker's training was resumed, not restarted
    proposals = _query(url, "SELECT proposed_index FROM iotnas_candidates WHERE proposed_index IS NOT NULL")
    assert sorted(i for (i,) in proposals) == list(range(len(proposals)))


def test_three_workers_on_sqlite_survive_a_kill(tmp_path):
    _three_workers_one_killed(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


def test_three_workers_on_postgresql_survive_a_kill(tmp_path, postgres_url):
    _three_workers_one_killed(tmp_path, postgres_url)


def _done(url):
    engine = create_engine(url)
    try:
        with engine.connect() as con:
            return sorted(tuple(r) for r in con.execute(text(
                "SELECT arch_key, epochs, accuracy FROM iotnas_trainings WHERE status = 'done'")))
    except Exception:
        return []
    finally:
        engine.dispose()


def test_server_stops_and_comes_back(tmp_path, postgres_server, postgres_url):
    _, control = postgres_server
    if control is None:
        pytest.skip("the server is external (IOTNAS_TEST_POSTGRES_URL): cannot stop it")
    study = tmp_path / "shared.toml"
    study.write_text(STUDY)
    proc = subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study), "--store", postgres_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(_done(postgres_url)) < 1 and proc.poll() is None:
        time.sleep(0.2)
    before = _done(postgres_url)
    assert before, "no training finished before the outage"
    control("stop")
    try:
        code = proc.wait(timeout=600)
        err = proc.stderr.read()
    finally:
        control("start")
    assert code == 2, err
    *warnings, last = err.splitlines()
    assert last.startswith("iotnas: error: store") and "Traceback" not in err
    assert all(line.startswith("WARNING iotnas.search.workers: heartbeat failed: store") for line in warnings)
    assert set(before) <= set(_done(postgres_url))  # what was committed is intact
    resumed = subprocess.run([sys.executable, "-m", "iotnas", "search", str(study), "--store", postgres_url],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert len(_done(postgres_url)) == 5


def test_two_workers_split_the_timing_and_the_precision_stage(tmp_path):
    """A proposal's training is claimed before its latency is timed: the other worker leaves it alone,
    and a proposal found too slow gives its claim back (no training row is left for it). Each model's
    formats, and each fine-tuning, is done by one of the two workers, once; both finish.

    (One search checks both: each 2-worker search costs the suite half a minute.)"""
    import re

    study_file = tmp_path / "shared.toml"
    study_file.write_text(
        STUDY.replace('seed = 3', 'seed = 3\nformats = ["float32", "half", "int8"]')
        .replace("epochs = [8]", "epochs = [1]")
        .replace("max_weight_bytes = 16384", "max_weight_bytes = 16384\nmax_latency_ms = 0.3")
        + "[precision]\nfinetune_epochs = 1\nfinetune_top = 2\n")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    result = subprocess.run([sys.executable, "-m", "iotnas", "search", str(study_file), "--store", url, "--workers", "2"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    timed = re.findall(r"worker \d+: timing (\S+)$", result.stdout, flags=re.MULTILINE)
    assert timed and len(timed) == len(set(timed)), timed  # each proposal timed by one worker, once
    slow = _query(url, "SELECT key FROM iotnas_candidates WHERE status = 'rejected:latency'")
    trainings = _query(url, "SELECT arch_key, status FROM iotnas_trainings")
    assert trainings and all(status == "done" for _, status in trainings)
    assert not {k for (k,) in slow} & {k for k, _ in trainings}  # a too-slow proposal left no claim behind

    scored = re.findall(r"worker (\d+): number formats of (\S+?)(?:  \(ETA .*)?$", result.stdout, flags=re.MULTILINE)
    tuned = re.findall(r"worker (\d+): fine-tuned (\S+) in (\S+):", result.stdout, flags=re.MULTILINE)
    keys = [k for k, _ in trainings]
    assert sorted(k for _, k in scored) == sorted(keys), result.stdout  # every model scored once, by one worker
    pairs = {(k, f) for _, k, f in tuned}
    assert len(tuned) == len(pairs) and {f for _, f in pairs} == {"float16", "int8"}, result.stdout  # each once
    finetuned = _query(url, "SELECT arch_key, format_name FROM iotnas_precision WHERE finetuned")
    assert set(finetuned) == pairs
    jobs = _query(url, "SELECT name, status FROM iotnas_jobs")
    assert len(jobs) == len(keys) + len(pairs) and {s for _, s in jobs} == {"done"}
