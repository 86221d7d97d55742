"""Many studies in one store (SQLite file or PostgreSQL database), each resumed on its own, as Optuna keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from iotnas.errors import StoreError
from iotnas.store import SCHEMA_VERSION, Store, migrations

STUDY = """\
name = "{name}"
mode = "tabular"
released = "{released}"
[constraints]
max_weight_bytes = {limit}
[space]
laws = ["mobilenetv2"]
[strategy]
name = "laws"
[budget]
trainings = 12
"""


def _study_file(folder: Path, released: Path, name: str, limit: int) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, released=released, limit=limit))
    return path


def _one_line(code: int, err: str) -> str:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_studies_in_one_store_each_resume_on_their_own(backend, tmp_path, released_dir, cli, request):
    from iotnas.search import Workflow, build_components
    from iotnas.study import load_study

    url = str(tmp_path / "shared.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    small, large = (_study_file(tmp_path, released_dir, name, limit)
                    for name, limit in (("small", 16_384), ("large", 65_536)))
    # "small" stops after 3 trainings, as if interrupted; "large" then runs to the end in the same store.
    study = load_study(small)
    with Store.open(url, study=study) as store:
        Workflow(study, store, build_components(study), stop=lambda history: len(history) >= 3).run()
    code, out, err = cli("search", str(large), "--store", url)
    assert code == 0, err
    code, out, err = cli("studies", url, "--json")
    assert code == 0, err
    listed = {s["name"]: s for s in json.loads(out)}
    assert list(listed) == ["small", "large"]
    assert listed["small"]["trainings"] == 3 and listed["large"]["trainings"] == 12
    assert listed["large"]["best_accuracy"] > 0.5 and listed["large"]["best_format"] == "float32"
    # Read commands need a name once a store holds several studies; the error says how to give one.
    err = _one_line(*cli("status", url)[::2])
    assert "holds 2 studies ('small', 'large'); choose one with --study NAME" in err
    code, out, err = cli("status", url, "--study", "small")
    assert code == 0 and "study small" in out and "trainings done" in out, err
    # "small" resumes where it stopped: nine more trainings, its first three kept, "large" untouched.
    with Store.open(url, study_name="small", read_only=True) as store:
        first = {t.arch_key: t.accuracy for t in store.trainings()}
    code, out, err = cli("search", str(small), "--store", url)
    assert code == 0, err
    with Store.open(url, study_name="small", read_only=True) as store:
        resumed = {t.arch_key: t.accuracy for t in store.trainings()}
        proposals = [c.proposed_index for c in store.proposals()]
        assert all(c.n_values * 4 <= 16_384 for c in store.candidates(status="feasible"))
    assert len(resumed) == 12 and first.items() <= resumed.items() and proposals == list(range(len(proposals)))
    with Store.open(url, study_name="large", read_only=True) as store:
        assert len(store.trainings()) == 12
    code, out, err = cli("show", url, "--study", "large", "--json")
    assert code == 0 and json.loads(out)["study"] == "large", err
    err = _one_line(*cli("show", url, "--study", "medium")[::2])
    assert "holds no study named 'medium'; it holds 'small', 'large'" in err


def test_a_second_study_gets_its_own_run_folder(tmp_path):
    with Store.open(str(tmp_path / "s.db"), study_name="a") as a:
        assert a.runs_name == "s-runs"  # as before stores held several studies: existing stores keep theirs
    with Store.open(str(tmp_path / "s.db"), study_name="b") as b:
        assert b.runs_name == "s-b-runs"
    with Store.open(str(tmp_path / "s.db"), study_name="a") as a:
        assert a.runs_name == "s-runs"


def test_a_missing_postgresql_database_names_the_command_that_creates_it(postgres_server, cli):
    base, _ = postgres_server
    url = f"{base}/no_such_db"
    with pytest.raises(StoreError, match='database "no_such_db" does not exist') as refused:
        Store.open(url)
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert str(refused.value).endswith(f"; create it first: createdb -h 127.0.0.1 -p {port} -U iotnas no_such_db")
    err = _one_line(*cli("studies", url)[::2])
    assert "createdb" in err


def _schema_n_store(old_store: Path, schema: int) -> Path:
    """The frozen schema 1 store, migrated as iotnas did when schema ``schema`` was the newest: a store users have."""
    engine = create_engine(f"sqlite:///{old_store}")
    with engine.begin() as connection:
        migrations.stamp(connection, "0001")
        migrations.upgrade(connection, f"{schema:04d}")
        connection.exec_driver_sql(f"UPDATE iotnas_meta SET value = '{schema}' WHERE key = 'schema_version'")
    engine.dispose()
    return old_store


def _schema_2_store(old_store: Path) -> Path:
    return _schema_n_store(old_store, 2)


def test_a_schema_2_store_is_upgraded_and_its_study_resumes(old_store, cli, snapshot):
    path = _schema_2_store(old_store)
    before = snapshot(str(path))
    assert before["iotnas_alembic_version"] == [("0002",)]
    code, out, err = cli("upgrade", str(path))
    assert code == 0 and f"to schema {SCHEMA_VERSION}" in out, err
    after = snapshot(str(path))
    for table in ("iotnas_latencies", "iotnas_trainings"):  # every row kept, study 1's
        assert [row[:1] + row[2:] for row in after[table]] == before[table]
        assert {row[1] for row in after[table]} == {1}
    # precision results gained schema 3's test_images and full_accuracy on the way (NULL: the whole split)
    assert [row[:1] + row[2:-2] for row in after["iotnas_precision"]] == before["iotnas_precision"]
    assert {row[1] for row in after["iotnas_precision"]} == {1}
    assert {row[-2:] for row in after["iotnas_precision"]} == {(None, None)}
    assert after["iotnas_precision_skipped"] == [] and after["iotnas_jobs"] == []  # no claims before 0005
    assert [row[1:] for row in after["iotnas_candidates"]] == before["iotnas_candidates"]
    assert [(study_id, name) for study_id, name, _ in after["iotnas_studies"]] == [(1, "store-v1")]
    code, out, err = cli("studies", str(path))
    assert code == 0 and "store-v1" in out and "probenet/s2/4" in out, err
    # The study file opens its study again (same fingerprint), and a second study joins the store.
    from iotnas.study import load_study

    study = load_study(path.with_suffix(".toml"))
    with Store.open(str(path), study=study, create=False) as store:
        assert store.study_name == "store-v1" and len(store.trainings()) == 4
        assert store.runs_name == "store-v1-runs"  # where its checkpoints have always been
    with Store.open(str(path), study_name="another") as store:
        assert store.candidates() == [] and store.runs_name == "store-v1-another-runs"
    assert Store.study_names(str(path)) == ["store-v1", "another"]


def test_a_schema_3_store_keeps_its_precision_subsets_and_skipped_formats(old_store, cli, snapshot):
    """Schema 3 (precision subsets and skipped formats, one study) upgrades with those rows made study 1's."""
    path = _schema_n_store(old_store, 3)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        arch_key, epochs = connection.exec_driver_sql(
            "SELECT arch_key, epochs FROM iotnas_precision ORDER BY id LIMIT 1").one()
        connection.exec_driver_sql("UPDATE iotnas_precision SET test_images = 500, full_accuracy = 0.5 "
                                   "WHERE id = (SELECT min(id) FROM iotnas_precision)")
        connection.exec_driver_sql(
            "INSERT INTO iotnas_precision_skipped (arch_key, epochs, format_name, reason, created_at) "
            "VALUES (?, ?, 'e1m2', 'too narrow', '2024-01-01 00:00:00')", (arch_key, epochs))
    engine.dispose()
    before = snapshot(str(path))
    assert before["iotnas_alembic_version"] == [("0003",)]
    code, out, err = cli("upgrade", str(path))
    assert code == 0 and f"to schema {SCHEMA_VERSION}" in out, err
    after = snapshot(str(path))
    for table in ("iotnas_precision", "iotnas_precision_skipped"):
        assert [row[:1] + row[2:] for row in after[table]] == before[table]
        assert {row[1] for row in after[table]} == {1}
    with Store.open(str(path), study_name="store-v1", read_only=True) as store:
        skipped = store.skipped_formats()
        assert [(k.arch_key, k.format_name, k.reason) for k in skipped] == [(arch_key, "e1m2", "too narrow")]
        assert sorted(r.test_images for r in store.precision_results() if r.test_images) == [500]
    with Store.open(str(path), study_name="another") as store:  # a second study sees none of them
        assert store.skipped_formats() == [] and store.precision_results() == []
