"""A real search process killed mid-training resumes to the same results as an uninterrupted one."""

from pathlib import Path

from search_process import kill_when, rows, start_search

STUDY = """\
name = "killme"
store = "killme.db"
seed = 7
[data]
dataset = "digits"
limit = 256
[device]
kind = "local"
min_s = 0.05
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


def _running(db: Path) -> int:
    found = rows(db, "SELECT count(*) FROM iotnas_trainings WHERE status='running'")
    return found[0][0] if found else 0


def _results(db: Path) -> list[tuple]:
    return rows(db, "SELECT t.arch_key, t.epochs, t.accuracy, c.proposed_index FROM iotnas_trainings t "
                     "JOIN iotnas_candidates c ON c.key = t.arch_key WHERE t.status = 'done' ORDER BY c.proposed_index")


def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    # The uninterrupted reference.
    reference = _write(tmp_path / "reference")
    proc = start_search(reference)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    expected = _results(reference.parent / "killme.db")
    assert len(expected) == 2

    # The same study, killed (SIGKILL) once its first training has written a checkpoint.
    study = _write(tmp_path / "killed")
    db = study.parent / "killme.db"
    proc = start_search(study)
    killed = kill_when(proc, lambda: bool(list((study.parent / "killme-runs").glob("*/checkpoint.pt")))
                       and db.exists() and _running(db) > 0)
    assert killed, "the search finished before it could be interrupted"
    assert _running(db) == 1

    # Resume: same proposals, same accuracies, each model trained once, none over the limits.
    proc = start_search(study)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert _results(db) == expected
    assert rows(db, "SELECT count(*) FROM iotnas_trainings")[0][0] == len(expected)
    over = rows(db, "SELECT count(*) FROM iotnas_trainings t JOIN iotnas_candidates c ON c.key = t.arch_key "
                     "WHERE c.n_values * 4 > 16384")
    assert over[0][0] == 0
