"""Stores opened only to read are never changed; databases that are not stores are never touched;
a password in a store URL is never shown nor recorded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from iotnas.errors import StoreError
from iotnas.store import POOLED, Candidate, Store
from iotnas.store.migrations import head

STUDY = 'name = "other"\nmode = "train"\n[data]\ndataset = "digits"\n'


def _candidate() -> Candidate:
    return Candidate(key="densenet/s3/1", arch_json="{}", space="densenet", law="s3", arch_id=1, n_values=10, macs=5,
                     flops=7, peak_activation_bytes=100, status=POOLED, reason=None, proposed_index=None)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(code: int, err: str) -> str:
    assert code == 2 and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1, err
    return err


def _readers(store: str, folder: Path) -> list[tuple[str, ...]]:
    """Every command that only reads a store, each writing (if at all) into ``folder``."""
    return [("status", store), ("show", store), ("report", store, "--out", str(folder / "r.html")),
            ("export", store, "mobilenetv2/s6/3", "--out", str(folder / "x"))]


def test_read_only_store_refuses_writes_and_stays_as_it_was(store_url, snapshot):
    with Store.open(store_url, study_name="a") as store:
        store.add_candidates([_candidate()])
    url = store_url if "://" in store_url else f"sqlite:///{store_url}"
    before = snapshot(url)
    with Store.open(store_url, read_only=True) as store:
        assert [c.key for c in store.candidates()] == ["densenet/s3/1"]
        with pytest.raises(StoreError, match="read-only|readonly"):
            store.set_meta("note", "written")
    assert snapshot(url) == before


def test_read_only_open_of_an_old_store_says_how_to_migrate_it(store_url, snapshot, sql):
    Store.open(store_url, study_name="a").close()
    url = store_url if "://" in store_url else f"sqlite:///{store_url}"
    sql(url, "UPDATE iotnas_alembic_version SET version_num = '0001'")
    before = snapshot(url)
    with pytest.raises(StoreError, match=f"revision 0001, this one reads {head()}.*'iotnas upgrade "):
        Store.open(store_url, read_only=True)
    assert snapshot(url) == before


def test_read_only_open_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store.open(str(tmp_path / "absent.db"), read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_reading_keeps_the_journal_mode_of_a_sqlite_file(tmp_path, cli):
    """Reading never switches a file to WAL (a persistent change of someone's database)."""
    db = tmp_path / "s.db"
    with Store.open(str(db), study_name="a") as store:
        store.add_candidates([_candidate()])
    sqlite3.connect(db).execute("PRAGMA journal_mode=DELETE").fetchall()
    before = _sha(db)
    code, out, err = cli("status", str(db))
    assert code == 0, err
    assert _sha(db) == before
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# --------------------------------------------------------------------------- not a store


def test_a_database_of_something_else_is_refused_untouched(tmp_path, cli):
    db = tmp_path / "other.db"
    connection = sqlite3.connect(db)
    connection.executescript("CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('ada'), ('alan');")
    connection.close()
    before, files = _sha(db), sorted(os.listdir(tmp_path))
    study = tmp_path / "other.toml"
    study.write_text(STUDY)
    commands = [*_readers(str(db), tmp_path), ("search", str(study), "--store", str(db))]
    for command in commands:
        err = _one_line(*cli(*command)[::2])
        assert "not an iotnas store (its tables: people)" in err, command
    for read_only in (False, True):
        with pytest.raises(StoreError, match="not an iotnas store"):
            Store.open(str(db), read_only=read_only)
    assert _sha(db) == before
    assert sorted(os.listdir(tmp_path)) == [*files, "other.toml"]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_postgresql_database_of_something_else_is_refused_untouched(postgres_url, snapshot, sql):
    sql(postgres_url, "CREATE TABLE people (name TEXT)", "INSERT INTO people VALUES ('ada')")
    before = snapshot(postgres_url)
    for read_only in (False, True):
        with pytest.raises(StoreError, match=r"not an iotnas store \(its tables: people\)"):
            Store.open(postgres_url, study_name="a", read_only=read_only)
    assert snapshot(postgres_url) == before


@pytest.mark.parametrize("content", [b"name,accuracy\nm1,0.5\n" * 20, b"SQLite format 2\x00" + b"\x00" * 200],
                         ids=["csv", "almost-sqlite"])
def test_a_file_that_is_no_database_is_refused_untouched(tmp_path, cli, content):
    path = tmp_path / "results.db"
    path.write_bytes(content)
    study = tmp_path / "other.toml"
    study.write_text(STUDY)
    for command in [*_readers(str(path), tmp_path), ("search", str(study), "--store", str(path))]:
        err = _one_line(*cli(*command)[::2])
        assert "is not a SQLite database, so not an iotnas store" in err, command
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.toml", "results.db"]


# --------------------------------------------------------------------------- a folder one may not write


def _as_a_user_without_write_access(run):
    """``run()``'s result, in a process that may not write the test's read-only folders.

    Root ignores file permissions, so as root it runs in a child process that has become
    'nobody' (every module it needs was imported before: nobody cannot read root's Python).
    """
    if os.geteuid() != 0:
        return run()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(run()).encode()
            with os.fdopen(write, "wb") as handle:
                handle.write(payload)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        payload = handle.read()
    os.waitpid(pid, 0)
    assert payload, "the child process failed"
    return json.loads(payload)


@pytest.fixture
def shared_folders():
    """A read-only folder and a writable one, both reachable by 'nobody' (pytest's own are root's only)."""
    made = [Path(tempfile.mkdtemp(prefix="iotnas-ro-")), Path(tempfile.mkdtemp(prefix="iotnas-out-"))]
    made[0].chmod(0o755)
    made[1].chmod(0o777)
    yield made
    for folder in made:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_read_only_commands_read_a_store_in_a_folder_they_cannot_write(shared_folders, cli):
    from datetime import datetime

    from iotnas.store import Latency

    locked, out = shared_folders
    db = locked / "s.db"
    with Store.open(str(db), study_name="a") as store:
        store.add_candidates([_candidate()])
        store.add_latency(Latency("densenet/s3/1", "local:onnxruntime:t1", "measured", 1.5, {}))
        assert store.claim_training("densenet/s3/1", 1.0, worker="w", stale_before=datetime.min)
        store.finish_training("densenet/s3/1", 1.0, accuracy=0.5, checkpoint=None, seconds=1.0)
    commands = [("status", str(db)), ("show", str(db), "--json"), ("report", str(db), "--out", str(out / "r.html"))]
    for command in commands:  # once before, so that every module is imported before the switch of user
        code, _, err = cli(*command[:-1], str(out / "warm.html")) if command[0] == "report" else cli(*command)
        assert code == 0, err
    before, files = _sha(db), sorted(os.listdir(locked))
    if os.geteuid() != 0:
        db.chmod(0o444)
        locked.chmod(0o555)
    results = _as_a_user_without_write_access(lambda: [cli(*command) for command in commands])
    for command, (code, output, err) in zip(commands, results):
        assert code == 0, (command, err)
    assert json.loads(results[1][1])["best"][0]["key"] == "densenet/s3/1"
    assert (out / "r.html").stat().st_size > 1000
    assert _sha(db) == before and sorted(os.listdir(locked)) == files


# --------------------------------------------------------------------------- passwords


def _with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_a_password_in_the_url_is_never_shown_nor_recorded(postgres_url, snapshot, cli):
    """The test server trusts local connections, so it takes any password: enough to see where one goes."""
    secret = "s3cret-pw"
    url = _with_password(postgres_url, secret)
    with Store.open(url, study_name="a", fingerprint="f1") as store:
        store.add_candidates([_candidate()])
        assert secret not in store.url and "***" in store.url
        assert store.connect_url == url  # what another program (the optuna strategy) connects with
    with pytest.raises(StoreError) as refused:
        Store.open(url, study_name="b", create=False)
    assert "holds no study named 'b'" in str(refused.value) and secret not in str(refused.value)
    assert secret not in json.dumps(snapshot(postgres_url), default=str)  # in no row of any table
    for command in (("status", url), ("show", url), ("report", url, "--out", "/nonexistent/r.html")):
        code, out, err = cli(*command)
        assert secret not in out + err, command
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = make_url(url).set(port=s.getsockname()[1]).render_as_string(hide_password=False)
    for read_only in (False, True):
        with pytest.raises(StoreError, match="cannot open store") as failed:
            Store.open(closed, read_only=read_only)
        assert secret not in str(failed.value) and "***" in str(failed.value)
    err = _one_line(*cli("status", closed)[::2])
    assert secret not in err
    err = _one_line(*cli("status", "postgresql+psycopg://u:s3cret-pw@host:notaport/db")[::2])
    assert secret not in err


def test_the_recorded_study_holds_no_password(postgres_url, snapshot):
    from iotnas.study import parse_study

    url = _with_password(postgres_url, "s3cret-pw")
    study = parse_study({"name": "a", "store": url}, base_dir=".")
    with Store.open(url, study_name="a") as store:
        store.set_study(study)
    assert "s3cret-pw" not in json.dumps(snapshot(postgres_url), default=str)
