"""Progress a person can follow: lines in a log as a search runs, and `status` telling running from interrupted."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest

STUDY = """\
name = "tiny"
store = "tiny.db"
[data]
dataset = "digits"
limit = 256
[device]
min_s = 0.05
[constraints]
max_weight_bytes = 16384
[space]
laws = ["probenet/s2"]
pool_per_law = 3
[strategy]
name = "laws"
[budget]
trainings = 2
epochs = [2]
[training]
batch_size = 64
"""

STAGES = "pool|latency|train|promote|precision|wait|workers|done"
LINE = re.compile(rf"^ *\d+:\d\d(:\d\d)?  ({STAGES}) +(\d+/\d+)?  \S.*$")


def _search_logged_to_a_file(tmp_path, *, workers: str | None) -> tuple[str, list[str]]:
    """Run the tiny study with its output in a file, as under ``nohup``; the log as read while the
    search ran, and its progress lines (those before the winners' table)."""
    study = tmp_path / "tiny.toml"
    study.write_text(STUDY, encoding="utf-8")
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k != "IOTNAS_WORKERS"}  # None: the command's default
    if workers is not None:
        env["IOTNAS_WORKERS"] = workers
    with open(log, "w", encoding="utf-8") as out, open(tmp_path / "err", "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study)], stdout=out, stderr=err,
                                cwd=tmp_path, env=env)
        seen_running = ""
        deadline = time.monotonic() + 600
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                text = log.read_text(encoding="utf-8")
                if proc.poll() is None:  # read while the process was still running
                    seen_running = text
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.wait() == 0, (tmp_path / "err").read_text()
    lines = log.read_text(encoding="utf-8").splitlines()
    title = lines.index(next(line for line in lines if "best feasible models" in line))
    assert lines[title].strip() == "tiny: best feasible models"  # on its own line, nothing glued to it
    bad = [line for line in lines[:title] if not LINE.match(line)]
    assert not bad, f"not one event per line, with its stage: {bad}"
    return seen_running, lines[:title]


def test_a_search_logged_to_a_file_writes_its_progress_as_it_goes(tmp_path):
    seen_running, progress = _search_logged_to_a_file(tmp_path, workers="1")
    assert re.search(r"train .* training probenet/s2/\d+: epoch 1, loss", seen_running), \
        f"no epoch line in the log while the search ran:\n{seen_running}"
    epochs = [line for line in progress if ": epoch " in line]
    assert len(epochs) == 4  # every epoch of both trainings
    assert all("loss " in line and "img/s" in line for line in epochs)
    assert all("test " in line for line in epochs if ": epoch 2," in line)  # evaluated at the end of a training
    finished = [line for line in progress if "% after 2 epochs" in line]
    assert [LINE.match(line).group(3) for line in finished] == ["1/2", "2/2"]
    assert any(" precision " in line and "float32" in line and "(1 evaluated)" in line for line in progress)
    assert " done " in progress[-1]


def test_workers_started_by_default_report_their_epochs_in_the_log(tmp_path):
    """The default (one worker per core): each worker process's epochs reach the launcher's log, named."""
    from iotnas.executors import cores

    seen_running, progress = _search_logged_to_a_file(tmp_path, workers=None)
    epochs = [line for line in progress if ": epoch " in line]
    assert len(epochs) == 4, progress  # every epoch of both trainings, whichever worker trained it
    assert re.search(r"train .*training probenet/s2/\d+: epoch 1, loss", seen_running)
    if cores() > 1:
        named = {re.search(r"worker (\d+): training", line).group(1) for line in epochs}
        assert named <= {str(n) for n in range(1, cores() + 1)}
        assert any(" workers " in line and "local workers: " in line for line in progress)
    assert any(" done " in line for line in progress)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_waits_get_a_line_a_minute_and_a_stage_with_a_total_an_eta():
    from iotnas.cli.search import _Narrator
    from iotnas.search import SearchEvent

    clock = _Clock()
    narrator = _Narrator(clock)
    lines = []
    for second in range(150):  # a worker polling the store every second
        clock.now = float(second)
        lines += [second for step in [narrator.tell(SearchEvent("wait", "waiting for other workers' trainings"))]
                  if step.line]
    assert lines == [0, 60, 120]

    clock.now = 200.0
    assert narrator.tell(SearchEvent("train", "training a to 2 epochs", 0, 4)).eta is None
    clock.now = 210.0
    step = narrator.tell(SearchEvent("train", "a: 50.00% after 2 epochs", 1, 4))
    assert step.line and step.eta == 30.0  # 10 s a training, three left
    repeat = narrator.tell(SearchEvent("train", "a: 50.00% after 2 epochs", 1, 4))
    assert not repeat.line


def test_each_worker_gets_its_own_lines_and_eta():
    from iotnas.cli.search import _Narrator
    from iotnas.search import SearchEvent

    clock = _Clock()
    narrator = _Narrator(clock)
    first = narrator.tell(SearchEvent("train", "training a to 2 epochs", 0, 4, worker=1))
    second = narrator.tell(SearchEvent("train", "training a to 2 epochs", 0, 4, worker=2))
    assert first.line and second.line  # the same words from another worker are news
    assert first.text == "worker 1: training a to 2 epochs" and second.text.startswith("worker 2: ")
    clock.now = 10.0
    narrator.tell(SearchEvent("train", "b: 40.00% after 2 epochs", 1, 4, worker=2))
    clock.now = 20.0
    step = narrator.tell(SearchEvent("train", "a: 50.00% after 2 epochs", 1, 4, worker=1))
    assert step.eta == 60.0  # worker 1's own pace (20 s a training), not reset by worker 2's count


def test_status_tells_a_running_training_from_an_interrupted_one(tmp_path, cli):
    from datetime import datetime

    from iotnas.arch import Arch
    from iotnas.search.workers import new_worker_id
    from iotnas.store import POOLED, Candidate, Store
    from iotnas.study import parse_study

    db = tmp_path / "study.db"
    archs = [Arch.parse("probenet/s2/0"), Arch.parse("probenet/s2/1")]
    with Store.open(str(db), study_name="beats") as store:
        store.set_study(parse_study({"name": "beats", "data": {"dataset": "digits"},
                                     "workers": {"heartbeat_s": 5.0, "stale_after_s": 30.0}}, base_dir=str(tmp_path)))
        store.add_candidates([Candidate(
            key=a.key, arch_json=a.to_json(), space=a.space, law=a.law, arch_id=a.id, n_values=1000, macs=5000,
            flops=10000, peak_activation_bytes=4096, status=POOLED, reason=None, proposed_index=i,
        ) for i, a in enumerate(archs)])
        stale, fresh = archs
        assert store.claim_training(stale.key, 2.0, worker="another-host:1:dead", stale_before=datetime.min)
        me = new_worker_id()
        assert store.claim_training(fresh.key, 2.0, worker=me, stale_before=datetime.min)
        assert store.heartbeat(fresh.key, 2.0, worker=me)
        assert store.claim_job("fine-tuning probenet/s2/1 at 2 epochs in int8", worker=me, stale_before=datetime.min)
        store.finish_job("fine-tuning probenet/s2/1 at 2 epochs in int8", worker=me)  # done: not listed
        assert store.claim_job("fine-tuning probenet/s2/1 at 2 epochs in half", worker=me, stale_before=datetime.min)
        assert store.claim_job("number formats of probenet/s2/0 at 2 epochs [tag]", worker="another-host:2:gone",
                               stale_before=datetime.min)
    with sqlite3.connect(db) as connection:  # that worker stopped beating a minute ago, past stale_after_s
        connection.execute("UPDATE iotnas_trainings SET heartbeat_at = datetime(heartbeat_at, '-60 seconds') "
                           "WHERE arch_key = ?", (stale.key,))
        connection.execute("UPDATE iotnas_jobs SET heartbeat_at = datetime(heartbeat_at, '-60 seconds') "
                           "WHERE worker = 'another-host:2:gone'")
    code, out, err = cli("status", str(db))
    assert code == 0, err
    assert "probenet/s2/1 to 2 epochs: running\n" in out
    assert "probenet/s2/0 to 2 epochs: interrupted (resume with: iotnas search STUDY.toml)\n" in out
    assert "fine-tuning probenet/s2/1 at 2 epochs in half: running\n" in out and " in int8" not in out
    assert "number formats of probenet/s2/0 at 2 epochs [tag]: interrupted (resume with: iotnas search STUDY.toml)\n" in out
    assert re.search(r"trainings running\s+│\s+1", out) and re.search(r"trainings interrupted\s+│\s+1", out)


def test_a_resumed_training_is_timed_by_the_epochs_it_trains_not_those_it_found():
    """A final training resumed at epoch 50 of 80: its ETA is 30 epochs at the pace seen, not a few minutes."""
    from iotnas.cli.search import _Narrator
    from iotnas.search import SearchEvent
    from iotnas.train import EpochStats

    def epoch(n: int) -> EpochStats:
        return EpochStats(epoch=n, epochs_done=float(n), total_epochs=80.0, loss=1.0, train_accuracy=0.5,
                          test_accuracy=None, images_per_s=300.0, seconds=180.0, lr=0.01, resumed_from_epochs=50.0)

    clock = _Clock()
    narrator = _Narrator(clock)
    narrator.tell(SearchEvent("final", "training c to 80 epochs", 2, 3))  # two models finished before
    clock.now = 180.0
    assert narrator.tell(SearchEvent("final", "training c", 2, 3, detail=epoch(51))).eta == pytest.approx(29 * 180.0)
    clock.now = 360.0
    assert narrator.tell(SearchEvent("final", "training c", 2, 3, detail=epoch(52))).eta == pytest.approx(28 * 180.0)
