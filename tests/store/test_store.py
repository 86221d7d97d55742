import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from iotnas.errors import SchemaVersionError, StoreError
from iotnas.store import POOLED, SCHEMA_VERSION, Candidate, Latency, PrecisionResult, Store
from iotnas.store.migrations import head


def _candidate(key="densenet/s3/1", status=POOLED):
    return Candidate(key=key, arch_json="{}", space="densenet", law="s3", arch_id=1, n_values=10, macs=5,
                     flops=7, peak_activation_bytes=100, status=status, reason=None, proposed_index=None)


def test_round_trip_and_idempotent_writes(store_url, tmp_path):
    on_sqlite = "://" not in store_url
    with Store.open(store_url, study_name="a", fingerprint="f1") as store:
        assert store.add_candidates([_candidate()]) == 1
        assert store.add_candidates([_candidate()]) == 0  # repeats are harmless
        store.update_candidate("densenet/s3/1", proposed_index=0)
        store.add_latency(Latency("densenet/s3/1", "local:onnxruntime:t1", "measured", 1.5, {"cv": 0.01}))
        assert store.claim_training("densenet/s3/1", 1.0, worker="test", stale_before=datetime.min)
        store.finish_training("densenet/s3/1", 1.0, accuracy=0.5, checkpoint="c.pt", seconds=2.0)
        store.add_precision(PrecisionResult("densenet/s3/1", 1.0, "half", 16, 20, 0.49, False, None))
        store.add_precision(PrecisionResult("densenet/s3/1", 1.0, "half", 16, 20, 0.10, False, None))
    with Store.open(store_url, study_name="a", fingerprint="f1", create=False) as store:
        assert [c.key for c in store.proposals()] == ["densenet/s3/1"]
        assert store.latencies()["densenet/s3/1"].detail == {"cv": 0.01}
        (t,) = store.trainings(status="done")
        assert t.accuracy == 0.5  # a relative checkpoint lies beside a SQLite store; a server has no folder
        assert t.checkpoint == (str(tmp_path / "c.pt") if on_sqlite else "c.pt")
        (p,) = store.precision_results()
        assert p.accuracy == 0.49  # never overwritten
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
    if on_sqlite:
        assert sqlite3.connect(store_url).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_files_beside_the_store_are_found_after_the_folder_moves(tmp_path):
    old, elsewhere = tmp_path / "study", tmp_path / "elsewhere" / "ckpt.pt"
    old.mkdir()
    with Store.open(str(old / "s.db"), study_name="a", fingerprint="f1") as store:
        store.add_candidates([_candidate()])
        assert store.claim_training("densenet/s3/1", 1.0, worker="test", stale_before=datetime.min)
        store.finish_training("densenet/s3/1", 1.0, accuracy=0.5, checkpoint=str(old / "s-runs" / "c.pt"), seconds=1)
        store.add_precision(PrecisionResult("densenet/s3/1", 1.0, "half", 16, 20, 0.49, True, str(elsewhere)))
    moved = tmp_path / "moved"
    old.rename(moved)
    with Store.open(str(moved / "s.db"), study_name="a", fingerprint="f1", create=False) as store:
        assert store.trainings()[0].checkpoint == str(moved / "s-runs" / "c.pt")
        assert store.precision_results()[0].checkpoint == str(elsewhere)  # outside the folder: kept absolute
        assert store.path == moved / "s.db"
    with Store.open("sqlite://", study_name="a") as memory:
        memory.add_candidates([_candidate()])
        assert memory.claim_training("densenet/s3/1", 1.0, worker="test", stale_before=datetime.min)
        memory.finish_training("densenet/s3/1", 1.0, accuracy=0.5, checkpoint=str(moved / "c.pt"), seconds=1)
        assert memory.path is None and memory.trainings()[0].checkpoint == str(moved / "c.pt")
    assert sqlite3.connect(moved / "s.db").execute("SELECT checkpoint FROM iotnas_trainings").fetchone()[0] == "s-runs/c.pt"


def test_studies_share_a_store_each_with_its_own_rows_and_settings(store_url):
    with Store.open(store_url, study_name="a", fingerprint="f1") as a:
        a.add_candidates([_candidate()])
        assert a.claim_proposal("densenet/s3/1") == 0
    with Store.open(store_url, study_name="b", fingerprint="f2") as b:  # another study: its own, empty, rows
        assert b.candidates() == [] and b.meta()["study_name"] == "b"
        b.add_candidates([_candidate()])  # the same architecture, in study b
        assert b.claim_proposal("densenet/s3/1") == 0  # proposal indices count per study
        b.add_latency(Latency(arch_key="densenet/s3/1", device_key="d", source="measured", median_ms=2.0, detail={}))
    with Store.open(store_url, study_name="a", fingerprint="f1") as a:
        assert [c.proposed_index for c in a.candidates()] == [0] and a.latencies() == {}
    with pytest.raises(StoreError, match="settings changed"):
        Store.open(store_url, study_name="a", fingerprint="f2")
    with pytest.raises(StoreError, match=r"holds 2 studies \('a', 'b'\); choose one with --study NAME"):
        Store.open(store_url, read_only=True)
    with pytest.raises(StoreError, match=r"holds no study named 'c'; it holds 'a', 'b'"):
        Store.open(store_url, study_name="c", read_only=True)


def test_older_known_schema_migrated_newer_and_unknown_refused_without_damage(store_url, snapshot, sql):
    with Store.open(store_url, study_name="a") as store:
        store.add_candidates([_candidate()])
    at_head = snapshot(store_url)
    assert at_head["iotnas_alembic_version"] == [(head(),)]
    for newer in (f"UPDATE iotnas_alembic_version SET version_num = '{int(head()) + 1:04d}'",  # a revision unknown here
                  "UPDATE iotnas_meta SET value = '99' WHERE key = 'schema_version'"):
        sql(store_url, newer)
        before = snapshot(store_url)
        with pytest.raises(SchemaVersionError, match="newer iotnas"):
            Store.open(store_url, study_name="a")
        assert snapshot(store_url) == before
        sql(store_url, "DELETE FROM iotnas_alembic_version", f"INSERT INTO iotnas_alembic_version VALUES ('{head()}')",
             f"UPDATE iotnas_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'")
    Store.open(store_url, study_name="a").close()
    assert snapshot(store_url) == at_head  # (schema 1 stores, which predate revisions, are migrated: test_migration)
    # schema 0 never existed, and a store without any version record is damaged
    sql(store_url, "DROP TABLE iotnas_alembic_version", "UPDATE iotnas_meta SET value = '0' WHERE key = 'schema_version'")
    before = snapshot(store_url)
    with pytest.raises(SchemaVersionError, match="cannot migrate"):
        Store.open(store_url, study_name="a")
    assert snapshot(store_url) == before
    sql(store_url, "DROP TABLE iotnas_meta")
    with pytest.raises(SchemaVersionError, match="damaged"):
        Store.open(store_url, study_name="a")
    assert len(snapshot(store_url)["iotnas_candidates"]) == 1


def test_unwritable_and_missing_locations(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(str(tmp_path / "nope" / "s.db"))
    with pytest.raises(StoreError, match="no store"):
        Store.open(str(tmp_path / "absent.db"), create=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(StoreError, match="not writable"):
            Store.open(str(locked / "s.db"))
    finally:
        locked.chmod(0o700)


def test_full_disk_is_a_clear_error_and_keeps_what_was_committed(tmp_path):
    """A store on a tiny tmpfs fills up: StoreError naming the problem, earlier batches intact."""
    import subprocess

    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + mounted.stderr.decode().strip())
    try:
        committed = 0
        with pytest.raises(StoreError, match="full"):
            with Store.open(str(disk / "s.db"), study_name="a") as store:
                for batch in range(1000):
                    store.add_candidates([
                        Candidate(key=f"k{batch}-{i}", arch_json="x" * 2000, space="densenet", law="s3",
                                  arch_id=i, n_values=1, macs=1, flops=1, peak_activation_bytes=1, status=POOLED,
                                  reason=None, proposed_index=None)
                        for i in range(10)
                    ])
                    committed += 10
        assert committed > 0
        with Store.open(str(disk / "s.db"), study_name="a", create=False) as store:
            assert len(store.candidates()) == committed
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_the_stored_study_reads_back_as_the_same_value(example, store_url):
    """What a search records is read back by the same code as a study file: every reader gets a Study."""
    from iotnas.study import load_study

    study = load_study(example)
    with Store.open(store_url, study_name=study.name, fingerprint=study.fingerprint) as store:
        assert store.study() is None  # nothing recorded yet
        store.set_study(study)
    with Store.open(store_url, create=False) as store:
        again = store.study()
    assert again == study and again.fingerprint == study.fingerprint


def test_a_damaged_stored_study_is_a_clear_error(tmp_path):
    with Store.open(str(tmp_path / "s.db"), study_name="a") as store:
        store.set_meta("study", '{"name": "a", "budget": {"epochs": "many"}}')
        with pytest.raises(StoreError, match="the recorded study cannot be read"):
            store.study()


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path, at_once):
    """One creates it and switches it to WAL; the others wait for that instead of failing 'locked'."""
    for round_ in range(30):
        path = str(tmp_path / f"s{round_}.db")
        assert at_once(lambda: Store.open(path, study_name="a").close(), 6) == []
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
