"""Stores written by older iotnas are migrated when opened, on SQLite and PostgreSQL.

``tests/fixtures/store-v1`` is a store made by iotnas before migrations existed (schema 1);
its README says how. It must never be re-made: it stands for the stores users have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, select, text

from iotnas.errors import SchemaVersionError, StoreError
from iotnas.store import SCHEMA_VERSION, Store, migrations
from iotnas.store.models import Base
from iotnas.study import load_study, parse_study

# What the fixture holds (counted when it was made).
ROWS = {"iotnas_candidates": 30, "iotnas_latencies": 6, "iotnas_trainings": 4, "iotnas_precision": 5}
FINETUNED = 2
BASE_DIR = "/tmp/fx"  # the folder it was made in, as its study recorded


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_migrated(url: str, snapshot, study_file: Path) -> None:
    rows = snapshot(url)
    assert rows["iotnas_alembic_version"] == [(migrations.head(),)]
    assert {name: len(rows[name]) for name in ROWS} == ROWS
    assert sum(1 for row in rows["iotnas_precision"] if row[8]) == FINETUNED  # the finetuned column
    study_ids = {row[0 if name == "iotnas_candidates" else 1] for name in ROWS for row in rows[name]}
    assert study_ids == {1}  # every row is study 1's
    assert [(study_id, name) for study_id, name, _ in rows["iotnas_studies"]] == [(1, "store-v1")]
    assert set(dict(rows["iotnas_meta"])) == {"schema_version", "created_at", "iotnas_version"}
    assert dict(rows["iotnas_meta"])["schema_version"] == str(SCHEMA_VERSION)
    meta = {key: value for study_id, key, value in rows["iotnas_study_meta"]}
    assert meta["study_base_dir"] == BASE_DIR and "weight_bits" not in meta and "study_fingerprint" in meta
    study = json.loads(meta["study"])
    assert study["space"] == {"laws": ["mobilenetv2/s5", "probenet/s2"], "pool_per_law": 15}
    assert not {"laws", "pool_per_law", "base_dir"} & set(study)
    assert "null" not in meta["study"]
    from_file = load_study(study_file)
    assert parse_study(study, base_dir=meta["study_base_dir"]) == dataclasses.replace(from_file, base_dir=BASE_DIR)


def test_schema_1_store_is_migrated_when_opened(old_store, snapshot):
    with Store.open(str(old_store), study_name="store-v1", create=False) as store:
        trainings = store.trainings(status="done")
        assert len(store.precision_results()) == ROWS["iotnas_precision"]
    assert all(Path(t.checkpoint).is_file() for t in trainings)  # recorded relative to the moved folder
    _assert_migrated(str(old_store), snapshot, old_store.with_suffix(".toml"))


def test_migrated_store_is_reported_by_the_cli(old_store, cli):
    before = _sha(old_store)
    for command in ("status", "show", "report"):  # they only read: they say how to migrate, and change nothing
        code, _, err = cli(command, str(old_store))
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "older iotnas (schema revision 0001" in err and "iotnas upgrade" in err
    assert _sha(old_store) == before
    code, out, err = cli("upgrade", str(old_store))
    assert code == 0 and f"schema {SCHEMA_VERSION}" in out, err
    code, out, err = cli("upgrade", str(old_store))  # once is enough
    assert code == 0 and "already" in out, err
    code, out, err = cli("status", str(old_store))
    assert code == 0, err
    assert "winner: probenet/s2/4" in out
    code, out, err = cli("show", str(old_store), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["study"] == "store-v1" and shown["trainings"] == ROWS["iotnas_trainings"]
    assert shown["best"][0]["key"] == "probenet/s2/4"


def test_second_open_changes_nothing(old_store):
    Store.open(str(old_store), create=False).close()
    migrated = _sha(old_store)
    Store.open(str(old_store), create=False).close()
    assert _sha(old_store) == migrated


def test_store_of_a_newer_iotnas_is_refused_untouched(old_store, sql):
    Store.open(str(old_store), create=False).close()
    sql(str(old_store), "UPDATE iotnas_alembic_version SET version_num = '9999'")
    before = _sha(old_store)
    with pytest.raises(SchemaVersionError, match="newer iotnas"):
        Store.open(str(old_store), create=False)
    assert _sha(old_store) == before


def test_failed_migration_leaves_the_store_as_it_was(old_store, sql, snapshot):
    sql(str(old_store), "UPDATE iotnas_meta SET value = 'not json' WHERE key = 'study'")
    before, rows = _sha(old_store), snapshot(str(old_store))
    with pytest.raises(StoreError, match=f"cannot migrate .* from schema revision 0001 to {migrations.head()}: JSONDecodeError"):
        Store.open(str(old_store), create=False)
    assert _sha(old_store) == before and snapshot(str(old_store)) == rows  # no iotnas_alembic_version table either


def test_workers_opening_an_old_store_at_once_migrate_it_once(old_store, snapshot, at_once):
    assert at_once(lambda: Store.open(str(old_store), study_name="store-v1", create=False).close(), 4) == []
    _assert_migrated(str(old_store), snapshot, old_store.with_suffix(".toml"))


@pytest.mark.parametrize("stamped", [False, True], ids=["before-alembic", "at-0001"])
def test_schema_1_store_on_postgresql_is_migrated(old_store, postgres_url, snapshot, stamped):
    source, target = create_engine(f"sqlite:///{old_store}"), create_engine(postgres_url)
    tables = MetaData()
    tables.reflect(source)
    with source.connect() as read, target.begin() as write:
        migrations.upgrade(write, "0001")
        if not stamped:  # as iotnas wrote it before revisions existed
            write.execute(text("DROP TABLE iotnas_alembic_version"))
        for table in tables.sorted_tables:
            write.execute(insert(table), [row._asdict() for row in read.execute(select(table))])
            if "id" in table.c:  # rows came with their ids: move the sequence past them, as inserts would have
                write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) "
                                   f"FROM {table.name}"))
    source.dispose()
    target.dispose()
    Store.open(postgres_url, study_name="store-v1", create=False).close()
    _assert_migrated(postgres_url, snapshot, old_store.with_suffix(".toml"))
    with Store.open(postgres_url, study_name="store-v1", create=False) as store:
        assert store.claim_training("probenet/s2/12", 2.0, worker="test", stale_before=datetime.min)  # the migrated store takes new rows
        assert len(store.trainings()) == ROWS["iotnas_trainings"] + 1
    with Store.open(postgres_url, study_name="second") as store:  # a new study draws the next id, past the migrated one
        assert store.trainings() == [] and Store.study_names(postgres_url) == ["store-v1", "second"]


def test_revisions_build_exactly_the_models_tables(store_url):
    Store.open(store_url).close()
    engine = create_engine(store_url if "://" in store_url else f"sqlite:///{store_url}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": migrations.VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
    assert migrations.head() == f"{SCHEMA_VERSION:04d}"


def test_study_conversion_moves_the_space_and_drops_nulls():
    path = Path(migrations.__file__).parent / "versions" / "0002_study_as_typed_value.py"
    spec = importlib.util.spec_from_file_location("revision_0002", path)
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    old = {"name": "s", "released": None, "data": {"dataset": "digits", "limit": None}, "laws": ["all"],
           "pool_per_law": 200, "strategy": {"name": "random", "settings": {"x": [{"y": None, "z": 1}]}},
           "base_dir": "/studies"}
    assert revision.convert_study(old) == (
        {"name": "s", "data": {"dataset": "digits"}, "strategy": {"name": "random", "settings": {"x": [{"z": 1}]}},
         "space": {"laws": ["all"], "pool_per_law": 200}},
        "/studies",
    )


def test_migrated_store_resumes_reports_and_exports(old_store, cli, tmp_path):
    """A user's old study goes on where it stopped: nothing retrained, then a report and an export."""
    with Store.open(str(old_store), create=False) as store:
        before = {(t.arch_key, t.epochs): t.accuracy for t in store.trainings()}
    code, out, err = cli("search", str(old_store.with_suffix(".toml")))
    assert code == 0, err
    assert "probenet/s2/4" in out
    with Store.open(str(old_store), create=False) as store:
        assert {(t.arch_key, t.epochs): t.accuracy for t in store.trainings()} == before  # resumed, not redone
        assert len(store.precision_results()) == ROWS["iotnas_precision"]
    code, _, err = cli("report", str(old_store), "--out", str(tmp_path / "report.html"))
    assert code == 0, err
    assert "probenet/s2/4" in (tmp_path / "report.html").read_text(encoding="utf-8")
    code, _, err = cli("export", str(old_store), "probenet/s2/4", "--format", "int8", "--out", str(tmp_path / "x"))
    assert code == 0, err
    assert (tmp_path / "x" / "model.onnx").is_file() and (tmp_path / "x" / "weights.bin").is_file()


def test_export_refuses_check_images_of_another_dataset(old_store, cli, tmp_path, shared_data):
    """Fashion-MNIST has the digits' 10 classes and 1 channel, but it is not what the model learnt."""
    Store.open(str(old_store), create=False).close()  # migrated
    code, _, err = cli("export", str(old_store), "probenet/s2/4", "--out", str(tmp_path / "x"),
                       "--data", str(shared_data / "fashion-mnist"))
    assert code == 2 and "trained on digits, not fashion-mnist" in err
    assert not (tmp_path / "x").exists()
    code, _, err = cli("export", str(old_store), "probenet/s2/4", "--out", str(tmp_path / "y"), "--images", "0")
    assert code == 2 and "--images" in err
