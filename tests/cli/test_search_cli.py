"""`iotnas init | search | status | show` as a user runs them."""

import json
import shutil

import pytest

STUDY = """\
name = "cli"
mode = "tabular"
store = "cli.db"
released = "{released}"
[constraints]
max_weight_bytes = 65536
[space]
laws = ["mobilenetv2/s4"]
[strategy]
name = "laws"
[budget]
trainings = 100
"""


@pytest.fixture(scope="module")
def searched(released_dir, tmp_path_factory):
    """A finished tabular study over mobilenetv2/s4 (the released models answer)."""
    from iotnas.cli.main import main

    folder = tmp_path_factory.mktemp("study")
    study = folder / "cli.toml"
    study.write_text(STUDY.format(released=released_dir))
    assert main(["search", str(study)]) == 0
    return study


def test_search_reports_the_winner_by_the_default_rule(searched, cli, released_dir):
    """Fewest weight bytes within the tolerance (1 point) of the most accurate feasible model."""
    records = json.loads((released_dir / "NetConfigs.json").read_text())
    fits = [r for r in records if r["spacename"] == "random_net_mobilenetv2" and r["law"] == "s4"
            and r["params"] * 4 <= 65536]
    top = max(r["acc"] for r in fits)
    winner = min((r for r in fits if r["acc"] >= top - 0.01), key=lambda r: (r["params"], -r["acc"]))
    code, out, err = cli("show", str(searched.parent / "cli.db"), "--json", "--top", "3")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["winner_rule"] == {"pick": "fewest_bytes", "tolerance": 0.01}
    assert shown["best"][0]["key"] == f"mobilenetv2/s4/{winner['id']}"
    assert shown["best"][0]["accuracy"] == pytest.approx(winner["acc"])
    assert shown["trainings"] == len(fits)
    assert all(r["weight_bytes"] <= 65536 for r in shown["best"])


def test_rerun_resumes_without_training_again(searched, cli):
    code, out, _ = cli("show", str(searched.parent / "cli.db"), "--json")
    before = json.loads(out)["trainings"]
    code, _, err = cli("search", str(searched))
    assert code == 0, err
    code, out, _ = cli("show", str(searched.parent / "cli.db"), "--json")
    assert json.loads(out)["trainings"] == before
    code, out, _ = cli("status", str(searched.parent / "cli.db"))
    assert code == 0 and "winner: mobilenetv2/s4/" in out


def test_init_writes_a_study_that_loads(tmp_path, cli):
    from iotnas.study import load_study

    path = tmp_path / "mine.toml"
    code, _, err = cli("init", str(path))
    assert code == 0, err
    study = load_study(path)
    assert study.name == "mine" and study.constraints.max_weight_bytes == 32768
    code, _, err = cli("init", str(path))
    assert code == 2 and "already exists" in err


def test_init_comments_every_setting_at_its_default(tmp_path, cli):
    """Uncommenting every "# key = value" line of the example changes nothing: each is the true default."""
    import dataclasses
    import re
    import tomllib

    from iotnas.study import load_study
    from iotnas.train import recipe_for

    path = tmp_path / "s.toml"
    assert cli("init", str(path))[0] == 0
    text = path.read_text()
    uncommented, n = [], 0
    for line in text.splitlines():
        found = re.match(r"# (\w+ = .+?)(\s+#.*)?$", line)
        if found and "..." not in found.group(1):
            try:
                tomllib.loads(found.group(1))
            except tomllib.TOMLDecodeError:
                uncommented.append(line)  # prose that happens to look like a setting
                continue
            uncommented.append(found.group(1))
            n += 1
        else:
            uncommented.append(line)
    assert n >= 30
    edited = tmp_path / "edited.toml"
    edited.write_text("\n".join(uncommented))
    plain, explicit = load_study(path), load_study(edited)
    assert dataclasses.replace(explicit, base_dir=plain.base_dir, training={}) == dataclasses.replace(
        plain, training={})
    assert recipe_for(explicit, 1.0) == recipe_for(plain, 1.0)
    tables = {m.group(1) for m in re.finditer(r"^\[(\w+)\]", text, re.M)}
    assert tables == {"data", "device", "constraints", "space", "strategy", "budget", "training", "precision", "final",
                      "workers"}


def test_status_and_show_name_the_trainings_at_chance_level(tmp_path, cli):
    from datetime import datetime

    from iotnas.store import FEASIBLE, Candidate, Store
    from iotnas.study import parse_study

    study = parse_study({"name": "c", "data": {"num_classes": 10}})
    path = tmp_path / "c.db"
    with Store.open(str(path), study=study) as store:
        store.set_study(study)
        store.add_candidates([
            Candidate(key=f"densenet/s3/{i}", arch_json="{}", space="densenet", law="s3", arch_id=i, n_values=1000,
                      macs=1, flops=1, peak_activation_bytes=10, status=FEASIBLE, reason=None, proposed_index=i)
            for i in range(3)])
        for i, accuracy in enumerate((0.10, 0.93, 0.14)):
            assert store.claim_training(f"densenet/s3/{i}", 1.0, worker="w", stale_before=datetime.min)
            store.finish_training(f"densenet/s3/{i}", 1.0, accuracy=accuracy, checkpoint=None, seconds=1.0)
    code, out, err = cli("status", str(path))
    assert code == 0, err
    assert "2 training(s) at chance level" in out
    assert "densenet/s3/0 to 1 epochs: 10.00%" in out and "densenet/s3/2 to 1 epochs: 14.00%" in out
    assert "winner: densenet/s3/1" in out
    code, out, err = cli("show", str(path), "--json")
    shown = json.loads(out)
    assert [r["key"] for r in shown["best"]] == ["densenet/s3/1"]
    assert sorted(t["arch_key"] for t in shown["chance_level"]) == ["densenet/s3/0", "densenet/s3/2"]


def _one_clean_line(code, err):
    assert code == 2
    assert err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_malformed_toml(tmp_path, cli):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    code, _, err = cli("search", str(bad))
    _one_clean_line(code, err)
    assert "not valid TOML" in err


def test_unknown_key(tmp_path, cli):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[constraints]\nmax_weight = 3\n')
    code, _, err = cli("search", str(bad))
    _one_clean_line(code, err)
    assert "constraints.max_weight" in err


def test_impossible_constraints(tmp_path, cli, released_dir):
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(released=released_dir).replace("65536", "64"))
    code, _, err = cli("search", str(study))
    _one_clean_line(code, err)
    assert "the smallest" in err and "mobilenetv2/s4/" in err


def test_unwritable_store_path(tmp_path, cli, released_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(released=released_dir))
    code, _, err = cli("search", str(study), "--store", str(blocker / "s.db"))
    _one_clean_line(code, err)
    assert "does not exist" in err or "cannot" in err


def test_another_study_joins_the_store_and_reads_name_it(searched, tmp_path, cli, released_dir):
    other = tmp_path / "other.toml"
    other.write_text(STUDY.format(released=released_dir).replace('name = "cli"', 'name = "other"'))
    store = str(tmp_path / "joined.db")
    shutil.copy(searched.parent / "cli.db", store)
    code, _, err = cli("search", str(other), "--store", store)
    assert code == 0, err
    code, _, err = cli("status", store)
    _one_clean_line(code, err)
    assert "holds 2 studies ('cli', 'other'); choose one with --study NAME" in err
    code, out, err = cli("status", store, "--study", "other")
    assert code == 0 and "study other" in out, err


def test_commands_that_read_a_study_take_its_study_file(searched, tmp_path, cli, released_dir):
    """The file given to 'iotnas search' names the store and the study, also in a store holding two."""
    other = tmp_path / "other.toml"
    store = tmp_path / "joined.db"
    other.write_text(STUDY.format(released=released_dir).replace('name = "cli"', 'name = "other"')
                     .replace('store = "cli.db"', f'store = "{store.name}"'))
    shutil.copy(searched.parent / "cli.db", store)
    code, _, err = cli("search", str(other))
    assert code == 0, err
    code, out, err = cli("status", str(other))
    assert code == 0 and "study other" in out, err
    code, by_file, err = cli("show", str(other), "--json")
    assert code == 0, err
    assert by_file == cli("show", str(store), "--study", "other", "--json")[1]
    assert json.loads(by_file)["study"] == "other"
    code, out, err = cli("report", str(searched), "--out", str(tmp_path / "r.html"))
    assert code == 0 and (tmp_path / "r.html").is_file(), err
    code, _, err = cli("status", str(other), "--study", "cli")
    _one_clean_line(code, err)
    assert "is the study 'other'" in err
    code, _, err = cli("status", str(tmp_path / "missing.toml"))
    _one_clean_line(code, err)
    assert "study file" in err and "not found" in err


def test_status_of_missing_store(tmp_path, cli):
    code, _, err = cli("status", str(tmp_path / "none.db"))
    _one_clean_line(code, err)


def test_live_display_shows_training_throughput():
    from iotnas.cli.search import _SearchDisplay
    from iotnas.search import SearchEvent
    from iotnas.train import EpochStats

    stats = EpochStats(epoch=2, epochs_done=2.0, total_epochs=4.0, loss=1.234, train_accuracy=0.5, test_accuracy=0.6,
                       images_per_s=812.4, seconds=3.0, lr=0.1)
    display = _SearchDisplay()
    display.update(SearchEvent("train", "training densenet/s3/1", detail=stats))
    (task,) = display.progress.tasks
    assert task.description == "training densenet/s3/1: epoch 2, loss 1.234, test 60.00%, 812 img/s"


def _stop_a_search(tmp_path, signum: int, workers: str, executor: str = "local"):
    """Start a search, send ``signum`` to its process alone (as ``kill PID`` does) once a training has
    started; its exit code, its stderr, and the stored trainings' workers still alive a moment later."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    study = tmp_path / "stop.toml"
    study.write_text('name = "stop"\n[data]\ndataset = "digits"\n[device]\nmin_s = 0.05\n[space]\nlaws = ["probenet/s2"]\npool_per_law = 3\n'
                     '[budget]\ntrainings = 3\nepochs = [2000]\n', encoding="utf-8")
    # SIGINT as a terminal sends it: a suite run in the background (``cmd &``, ``nohup``) has SIGINT ignored,
    # its children inherit that, and Python then leaves it ignored; a handled signal starts at its default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "iotnas", "search", str(study), "--workers", workers,
                                 "--executor", executor], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 300  # Ray's start and the first training take minutes on a loaded 2-core machine
    while not list(tmp_path.glob("stop-runs/*")) and time.monotonic() < deadline:  # a training has started
        time.sleep(0.5)
    assert list(tmp_path.glob("stop-runs/*")), "no training started within 300 s: nothing to stop"
    proc.send_signal(signal.Signals(signum))
    _, err = proc.communicate(timeout=120)
    (store,) = tmp_path.glob("*.db")
    with sqlite3.connect(store) as db:
        holders = {int(w.split(":")[1]) for (w,) in db.execute("SELECT worker FROM iotnas_trainings") if w}
    assert holders

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 60  # a launcher killed outright: its workers notice within seconds
    while any(alive(pid) for pid in holders) and time.monotonic() < deadline:
        time.sleep(0.5)
    return proc.returncode, err, [pid for pid in holders if alive(pid)]


@pytest.mark.parametrize("signum, code, workers, executor",
                         [(2, 130, "1", "local"), (15, 143, "2", "local"), (15, 143, "2", "ray")])
def test_a_stopped_search_says_how_to_resume(tmp_path, signum, code, workers, executor):
    """SIGINT or SIGTERM: one line saying that the work is kept and how to go on, no traceback; a
    launcher's workers stop with it (Ray's crash handler once aborted a stopped Ray search: SIGABRT
    and a stack dump)."""
    returncode, err, alive = _stop_a_search(tmp_path, signum, workers, executor)
    assert returncode == code, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err and "SIGTERM received" not in err
    assert not alive  # no worker trains on after its launcher stopped


def test_workers_stop_when_their_launcher_is_killed(tmp_path):
    """SIGKILL cannot be passed on: the workers see their launcher gone and stop by themselves."""
    returncode, _, alive = _stop_a_search(tmp_path, 9, "2")
    assert returncode == -9 and not alive
