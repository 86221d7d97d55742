"""The study store: everything a stage learns, written before the next stage reads it.

SQLite (a file, WAL journal) by default, PostgreSQL by URL. One database holds any number
of studies, keyed by name (as an Optuna storage does); a :class:`Store` works on one of
them, chosen when it is opened, and each resumes on its own. Methods return frozen
values, never ORM rows; writes are keyed on the architecture key, so repeating
one is harmless. A store opened ``read_only`` is never changed, nor is a database
that is not an iotnas store: it is refused before anything is written to it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote

from sqlalchemy import create_engine, delete, event, func, insert, inspect, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from iotnas import __version__
from iotnas.errors import ConfigError, OlderSchemaError, SchemaVersionError, StoreError
from iotnas.files import is_sqlite_database
from iotnas.store import migrations
from iotnas.store.models import (
    SCHEMA_VERSION,
    CandidateRow,
    JobRow,
    LatencyRow,
    MetaRow,
    PrecisionRow,
    SkippedFormatRow,
    StudyMetaRow,
    StudyRow,
    TrainingRow,
)
from iotnas.store.records import (
    Candidate,
    Job,
    Latency,
    PrecisionResult,
    SkippedFormat,
    Training,
    TrainingStatus,
    candidate_from_row,
    job_from_row,
    latency_from_row,
    precision_from_row,
    record_fields,
    skipped_from_row,
    training_from_row,
)
from iotnas.study import Study, parse_study, study_changes


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def normalize_url(url_or_path: str) -> str:
    """A SQLAlchemy URL from a URL or a path to a SQLite file."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{Path(url_or_path).expanduser().resolve()}"


def display_url(url: str) -> str:
    """``url`` fit to show or record: its password, if any, masked (anything else is kept as given)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads, but it may still hold a password
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_settings(engine: Engine) -> None:
    """Per-connection settings that write nothing (WAL, which is written, is set once the store is known)."""
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised via every sqlite test
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def _read_only_sqlite(path: Path) -> Callable[[], sqlite3.Connection]:
    """Connections that cannot write the SQLite file ``path``.

    ``mode=ro`` reads a WAL store through its shared-memory file, which SQLite cannot create in
    a folder this user may not write: a store closed cleanly there (no ``-wal`` file, so no
    writer at work) is read as the unchanging file it is.
    """
    uri = f"file:{quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return connection
        except sqlite3.OperationalError:
            connection.close()
            if os.access(path.parent, os.W_OK) or path.with_name(path.name + "-wal").exists():
                raise
        return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)

    return connect


def _read_only_postgresql(engine: Engine) -> None:
    """Every transaction of ``engine`` read-only: the server refuses any write."""
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("SET default_transaction_read_only = on")
        cursor.close()
        dbapi_connection.commit()  # a SET inside a transaction that is rolled back is undone


_NO_STUDY = "\0"  # a study name no study file can give: open the store without choosing a study

_SCHEMA_LOCK_KEY = 0x696F746E6173  # "iotnas": PostgreSQL advisory lock taken while creating or migrating


def _begin_immediate(engine: Engine) -> None:
    """Start ``engine``'s SQLite transactions with BEGIN IMMEDIATE, DDL included (see :meth:`Store._schema_lock`)."""
    event.listen(engine, "connect", lambda dbapi_conn, _record: setattr(dbapi_conn, "isolation_level", None))
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))


class Store:
    """A study's database. Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, engine: Engine, url: str):
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._url = url
        self.url = display_url(url)  # for messages: never the password
        self.path: Path | None = _sqlite_file(url)  # the SQLite file; None for a server or in-memory store
        # Files a study writes beside its SQLite store are recorded relative to it, so the folder can move.
        self.folder: Path | None = self.path.parent if self.path is not None else None
        self.study_name: str | None = None  # the study this store object works on (None: the store has none yet)
        self._study_id: int | None = None
        self._first_study = True  # the store's first study keeps the run folder stores had before they held several

    def _stored_path(self, path: str | None) -> str | None:
        """``path`` as recorded: relative to the store's folder when it lies inside it.

        A relative ``path`` is already taken as relative to that folder.
        """
        if path is None or self.folder is None or not Path(path).is_absolute():
            return path
        try:
            return Path(path).resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return path  # elsewhere: kept as given

    def _real_path(self, stored: str | None) -> str | None:
        """A recorded path as a usable one (relative ones are taken from the store's folder)."""
        if stored is None or self.folder is None or Path(stored).is_absolute():
            return stored
        return str(self.folder / stored)

    @property
    def connect_url(self) -> str:
        """The URL to connect to the store with, password included: hand it on, never show or record it."""
        return self._url

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url_or_path: str,
        *,
        study_name: str | None = None,
        fingerprint: str | None = None,
        study: Study | None = None,
        create: bool = True,
        read_only: bool = False,
    ) -> "Store":
        """Open (and with ``create``, initialise) a store; one written by an older iotnas is migrated first.

        Args:
            study_name, fingerprint: the study to work on, created (with ``create``) when the store
                does not hold it yet; a study already there must have this fingerprint. Without a
                name, the store's only study is chosen.
            study: gives both; a refusal then names the settings that changed since the recorded study.
            create: create the schema when the store is new; otherwise refuse an empty store.
            read_only: never change the store (nor create or migrate it): for commands that only read.

        Raises:
            StoreError: the location cannot be opened or written (a PostgreSQL database that does not
                exist is named with the command that creates it), is empty when it must not be, is not
                an iotnas store, holds no such study, holds several and none was named, holds the study
                with other settings, needs a migration it may not have (read-only), or its migration
                failed (it is then left as it was).
            SchemaVersionError: the store was written by a newer iotnas, is damaged, or is too old to migrate.
        """
        if study is not None:
            study_name, fingerprint = study.name, study.fingerprint
        url = normalize_url(url_or_path)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            shown = display_url(url_or_path)
            raise StoreError(f"store {shown!r} is neither a SQLAlchemy URL nor a file path") from None
        create = create and not read_only
        is_sqlite = parsed.get_backend_name() == "sqlite"
        db_path = _sqlite_file(url)
        if db_path is not None:
            if db_path.exists() and db_path.stat().st_size and not is_sqlite_database(db_path):
                raise StoreError(f"{db_path} is not a SQLite database, so not an iotnas store; "
                                 "give the path of a study's store")
            if not db_path.exists():
                if not create:
                    raise StoreError(f"no store at {db_path}; run 'iotnas search STUDY.toml' to create one")
                parent = db_path.parent
                if not parent.is_dir():
                    raise StoreError(f"cannot create store {db_path}: folder {parent} does not exist")
                if not os.access(parent, os.W_OK):
                    raise StoreError(f"cannot create store {db_path}: folder {parent} is not writable")
        options = {"creator": _read_only_sqlite(db_path)} if read_only and db_path is not None else {}
        try:
            engine = create_engine(url, pool_pre_ping=True, future=True, **options)
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"cannot open store {display_url(url_or_path)!r}: {exc}") from None
        if is_sqlite:
            _sqlite_settings(engine)
        elif read_only and parsed.get_backend_name() == "postgresql":
            _read_only_postgresql(engine)
        store = cls(engine, url)
        try:
            store._prepare(study_name=study_name, fingerprint=fingerprint, study=study, create=create,
                           read_only=read_only)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _prepare(self, *, study_name: str | None, fingerprint: str | None, study: Study | None, create: bool,
                 read_only: bool) -> None:
        try:
            with self._engine.connect() as connection:
                at = self._schema_revision(connection, create=create)
            if at != migrations.head():
                if read_only:
                    raise OlderSchemaError(
                        f"store {self.url} was written by an older iotnas (schema revision {at}, this one reads "
                        f"{migrations.head()}); migrate it once with 'iotnas upgrade {self.url}' (a search migrates it too)"
                    )
                with self._schema_lock() as connection:
                    at = self._schema_revision(connection, create=create)  # another opener may have done it
                    if at is None:
                        self._create_schema(connection)
                    elif at != migrations.head():
                        self._migrate(connection, at)
            if self.path is not None and not read_only:
                self._use_wal()
        except (OperationalError, DBAPIError) as exc:
            raise StoreError(f"cannot open store {self.url}: {_db_message(exc)}{_createdb_hint(self._url, exc)}") from None
        self._choose_study(study_name, fingerprint=fingerprint, create=create)
        meta = self.meta()
        if fingerprint is not None and meta.get("study_fingerprint") not in (None, fingerprint):
            try:
                recorded = self.study()
            except StoreError:  # recorded by an iotnas that read it differently: nothing to compare
                recorded = None
            changes = None if study is None or recorded is None else study_changes(recorded.to_dict(), study.to_dict())
            if changes != []:  # []: the same settings, fingerprinted by an older rule (a device URL counted then)
                named = "" if not changes else ": " + "; ".join(changes[:3]) + (
                    f"; {len(changes) - 3} more" if len(changes) > 3 else "")
                raise StoreError(
                    f"store {self.url} was created by a different version of study {study_name!r} "
                    f"(its settings changed{named}); use a new store path, or restore the original settings"
                )

    def _choose_study(self, name: str | None, *, fingerprint: str | None, create: bool) -> None:
        """Work on study ``name`` (created with ``create``), or on the store's only study when None."""
        with self._session() as s:
            studies = dict(s.execute(select(StudyRow.name, StudyRow.id).order_by(StudyRow.id)).all())
        listing = ", ".join(repr(n) for n in studies)
        if name == _NO_STUDY:
            return
        if name is None:
            if len(studies) > 1:
                raise StoreError(f"store {self.url} holds {len(studies)} studies ({listing}); "
                                 "choose one with --study NAME")
            if studies:
                self._use_study(*next(iter(studies.items())), first=True)
            return
        if name not in studies:
            if not create:
                held = f"; it holds {listing}" if studies else "; it holds no study yet"
                raise StoreError(f"store {self.url} holds no study named {name!r}{held}")
            self._add_study(name, fingerprint=fingerprint)
            with self._session() as s:
                studies = dict(s.execute(select(StudyRow.name, StudyRow.id).order_by(StudyRow.id)).all())
        self._use_study(name, studies[name], first=studies[name] == min(studies.values()))

    @classmethod
    def study_names(cls, url_or_path: str) -> list[str]:
        """The names of the studies a store holds, oldest first (it is opened read-only).

        Raises:
            StoreError, SchemaVersionError: as :meth:`open` with ``read_only``.
        """
        with cls.open(url_or_path, study_name=_NO_STUDY, read_only=True) as store, store._session() as s:
            return list(s.scalars(select(StudyRow.name).order_by(StudyRow.id)))

    @classmethod
    def upgrade(cls, url_or_path: str) -> bool:
        """Migrate a store written by an older iotnas to this one's schema, every study in it at once.

        Returns whether it was migrated (False: it was already at this schema).

        Raises:
            StoreError, SchemaVersionError: as :meth:`open`.
        """
        try:
            cls.open(url_or_path, study_name=_NO_STUDY, create=False, read_only=True).close()
            return False
        except OlderSchemaError:
            cls.open(url_or_path, study_name=_NO_STUDY, create=False).close()  # in one transaction
            return True

    def _add_study(self, name: str, *, fingerprint: str | None) -> None:
        try:
            with self._session() as s:
                row = StudyRow(name=name, created_at=_now())
                s.add(row)
                s.flush()
                if fingerprint is not None:
                    s.add(StudyMetaRow(study_id=row.id, key="study_fingerprint", value=fingerprint))
        except IntegrityError:
            pass  # another worker created it first

    def _use_study(self, name: str, study_id: int, *, first: bool) -> None:
        self.study_name, self._study_id, self._first_study = name, study_id, first

    @property
    def runs_name(self) -> str:
        """The folder, beside a SQLite store, that holds its study's checkpoints.

        ``<stem>-runs`` for the store's first study (as before stores held several), and
        ``<stem>-<study>-runs`` for each other one, so studies never share a checkpoint.
        """
        stem = self.path.stem if self.path is not None else "store"
        return f"{stem}-runs" if self._first_study else f"{stem}-{self.study_name}-runs"

    def _mine(self, row_class: type) -> Any:
        """A condition selecting ``row_class``'s rows of this store's study (none, before it has one)."""
        return row_class.study_id == (-1 if self._study_id is None else self._study_id)

    def _sid(self) -> int:
        """The id of the study this store works on; a store without one gets its default study, "study"."""
        if self._study_id is None:
            self._choose_study("study", fingerprint=None, create=True)
        assert self._study_id is not None
        return self._study_id

    def _schema_revision(self, connection: Connection, *, create: bool) -> str | None:
        """The schema revision the store is at (schema 1 stores predate revisions: "0001"); None when new.

        Raises:
            SchemaVersionError: written by a newer iotnas, damaged, or too old to migrate.
            StoreError: empty, and ``create`` is off.
        """
        tables = set(inspect(connection).get_table_names())
        if MetaRow.__tablename__ not in tables:
            if any(t.startswith("iotnas_") for t in tables):
                raise SchemaVersionError(f"store {self.url} has iotnas tables but no version record; it is damaged")
            if tables:
                listing = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
                raise StoreError(f"{self.url} is a database of something else, not an iotnas store (its tables: "
                                 f"{listing}); give a new path or URL for the study's store")
            if not create:
                raise StoreError(f"store {self.url} holds no iotnas study")
            return None
        revision = migrations.current(connection)
        stored = connection.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version"))
        version = int(stored) if stored and stored.isdigit() else 0
        if version > SCHEMA_VERSION or (revision is not None and not migrations.is_known(revision)):
            found = f"schema {version}" + (f", revision {revision}" if revision else "")
            raise SchemaVersionError(
                f"store {self.url} was written by a newer iotnas ({found}, this one reads {SCHEMA_VERSION}); "
                "upgrade iotnas to open it"
            )
        if revision is None and version not in migrations.LEGACY_REVISIONS:
            raise SchemaVersionError(
                f"store {self.url} uses schema {version}, which this iotnas cannot migrate; "
                "open it with the iotnas version that wrote it"
            )
        return revision or migrations.LEGACY_REVISIONS[version]

    def _use_wal(self) -> None:
        """Put the SQLite file, known now to be an iotnas store, in WAL mode (it stays so: once, when new).

        The switch needs the file to itself and SQLite does not wait for that, so when several
        workers open a new store at once it is tried again until the others let go.
        """
        deadline = time.monotonic() + 30.0
        with self._engine.connect() as connection:
            while connection.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                try:
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                except OperationalError:
                    connection.rollback()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)

    @contextmanager
    def _schema_lock(self) -> Iterator[Connection]:
        """One transaction that holds the store's write lock until it ends.

        Workers opening a new or old store at once thus create or migrate it once: each looks
        again under the lock and finds the work done. A failure rolls everything back.
        SQLite: pysqlite begins transactions late and runs DDL outside them, so a connection of
        its own leaves them to ``BEGIN IMMEDIATE``, which takes the write lock at once and makes
        the DDL part of the transaction. PostgreSQL: DDL is transactional; an advisory lock held
        until commit queues the other openers.
        """
        engine = self._engine
        if self.path is not None:
            engine = create_engine(self._url, poolclass=NullPool)
            _sqlite_settings(engine)
            _begin_immediate(engine)
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                yield connection
        finally:
            if engine is not self._engine:
                engine.dispose()

    def _create_schema(self, connection: Connection) -> None:
        """A new store: every revision from the first (the same path old stores take), then the store's facts."""
        migrations.upgrade(connection)
        facts = {"schema_version": str(SCHEMA_VERSION), "created_at": _now().isoformat(), "iotnas_version": __version__}
        connection.execute(insert(MetaRow), [{"key": k, "value": v} for k, v in facts.items()])

    def _migrate(self, connection: Connection, at: str) -> None:
        """Upgrade the store from revision ``at`` to this code's, or raise StoreError and change nothing."""
        try:
            if migrations.current(connection) is None:
                migrations.stamp(connection, at)  # a store from before revisions existed
            migrations.upgrade(connection)
            connection.execute(
                update(MetaRow).where(MetaRow.key == "schema_version").values(value=str(SCHEMA_VERSION))
            )
        except Exception as exc:
            reason = _db_message(exc) if isinstance(exc, SQLAlchemyError) else f"{type(exc).__name__}: {exc}"
            raise StoreError(
                f"cannot migrate store {self.url} from schema revision {at} to {migrations.head()}: {reason}; "
                "the store was left as it was"
            ) from exc

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error, translate database errors."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError:
            session.rollback()
            raise
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            raise StoreError(f"store {self.url}: {_db_message(exc)}") from exc
        except ValueError as exc:  # DamagedRow, or a date SQLAlchemy cannot read: the store was edited
            session.rollback()
            raise StoreError(f"store {self.url} holds a value iotnas did not write: {exc}; "
                             "restore the store from a copy, or correct that row") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        """The store's facts, then its study's (``study_name``, ``study_fingerprint``, ``study``, ...)."""
        with self._session() as s:
            facts = {row.key: row.value for row in s.scalars(select(MetaRow))}
            if self._study_id is None:
                return facts
            facts["study_name"] = self.study_name
            created = s.scalar(select(StudyRow.created_at).where(StudyRow.id == self._study_id))
            facts["created_at"] = created.isoformat() if created is not None else facts.get("created_at")
            rows = s.scalars(select(StudyMetaRow).where(StudyMetaRow.study_id == self._study_id))
            return {**facts, **{row.key: row.value for row in rows}}

    def set_meta(self, key: str, value: str) -> None:
        """Record a fact of the study this store works on."""
        sid = self._sid()
        with self._session() as s:
            s.merge(StudyMetaRow(study_id=sid, key=key, value=value))

    def set_study(self, study: Study) -> None:
        """Record the study this store belongs to, in the form :meth:`study` reads back."""
        if self._study_id is None:
            self._choose_study(study.name, fingerprint=study.fingerprint, create=True)
        elif self.study_name != study.name:
            raise StoreError(f"store {self.url} was opened for study {self.study_name!r}, not {study.name!r}")
        recorded = {**study.to_dict(), "store": display_url(study.store)}  # a password is never stored
        sid = self._sid()
        with self._session() as s:
            s.merge(StudyMetaRow(study_id=sid, key="study", value=json.dumps(recorded, sort_keys=True)))
            s.merge(StudyMetaRow(study_id=sid, key="study_base_dir", value=study.base_dir))

    def record_device(self, identity: Mapping[str, Any]) -> None:
        """Record the device the study's latencies are timed on, or refuse another one.

        The device is known by what it reports (hostname, CPU, runtime versions), not by its
        address: a board reached under a new URL is the same board, another board is not.

        Raises:
            StoreError: the study was timed on a device with another identity; names what differs.
        """
        given = {key: identity[key] for key in sorted(identity)}
        recorded = self.meta().get("device_identity")
        if recorded is None:
            self.set_meta("device_identity", json.dumps(given, sort_keys=True))
            return
        old = json.loads(recorded)
        changes = [f"{key} {old.get(key)!r} -> {given.get(key)!r}"
                   for key in sorted(set(old) | set(given)) if old.get(key) != given.get(key)]
        if changes:
            raise StoreError(
                f"store {self.url}: its study's latencies were timed on another device ({'; '.join(changes)}); "
                "point [device] url at that device, or use a new store path for this one"
            )

    def study(self) -> Study | None:
        """The study recorded by :meth:`set_study` (None before a search has started).

        Raises:
            StoreError: the recorded study no longer validates (e.g. it names a removed strategy).
        """
        meta = self.meta()
        if not meta.get("study"):
            return None
        try:
            return parse_study(json.loads(meta["study"]), base_dir=meta.get("study_base_dir", "."),
                               default_name=meta.get("study_name", "study"))
        except (ConfigError, ValueError) as exc:
            raise StoreError(f"store {self.url}: the recorded study cannot be read ({exc})") from None

    # ------------------------------------------------------------------ candidates

    def add_candidates(self, candidates: Sequence[Candidate]) -> int:
        """Insert candidates not stored yet; returns how many were new."""
        if not candidates:
            return 0
        try:
            return self._add_candidates(candidates)
        except IntegrityError:  # another worker inserted some of them meanwhile: insert the rest
            return self._add_candidates(candidates)

    def _add_candidates(self, candidates: Sequence[Candidate]) -> int:
        sid = self._sid()
        with self._session() as s:
            known = set(s.scalars(select(CandidateRow.key).where(
                CandidateRow.study_id == sid, CandidateRow.key.in_([c.key for c in candidates]))))
            new = [c for c in candidates if c.key not in known]
            now = _now()
            s.add_all([CandidateRow(**record_fields(c), study_id=sid, created_at=now) for c in new])
            return len(new)

    def candidates(self, *, status: str | None = None, proposed: bool | None = None) -> list[Candidate]:
        with self._session() as s:
            query = select(CandidateRow).where(self._mine(CandidateRow))
            if status is not None:
                query = query.where(CandidateRow.status == status)
            if proposed is not None:
                column = CandidateRow.proposed_index
                query = query.where(column.is_not(None) if proposed else column.is_(None))
            return [candidate_from_row(r) for r in s.scalars(query.order_by(CandidateRow.created_at, CandidateRow.key))]

    def candidate(self, key: str) -> Candidate | None:
        with self._session() as s:
            row = s.get(CandidateRow, (self._study_id, key)) if self._study_id is not None else None
            return None if row is None else candidate_from_row(row)

    def update_candidate(
        self, key: str, *, status: str | None = None, reason: str | None = None, proposed_index: int | None = None
    ) -> None:
        with self._session() as s:
            row = s.get(CandidateRow, (self._study_id, key)) if self._study_id is not None else None
            if row is None:
                raise StoreError(f"candidate {key} is not in store {self.url}")
            if status is not None:
                row.status = status
                row.reason = reason
            if proposed_index is not None:
                row.proposed_index = proposed_index

    def set_statuses(self, statuses: dict[str, tuple[str, str | None]]) -> None:
        """Set many candidates' (status, reason) in one transaction."""
        if not statuses:
            return
        with self._session() as s:
            for row in s.scalars(select(CandidateRow).where(self._mine(CandidateRow),
                                                             CandidateRow.key.in_(list(statuses)))):
                row.status, row.reason = statuses[row.key]

    def claim_proposal(self, key: str) -> int | None:
        """Give ``key`` the next proposal index, unless another worker proposed it first.

        Returns the index, or None when the candidate was already proposed.
        """
        for _ in range(20):  # another worker may take the same index first: try the next one
            try:
                with self._session() as s:
                    last = s.scalar(select(func.max(CandidateRow.proposed_index)).where(self._mine(CandidateRow)))
                    index = 0 if last is None else last + 1
                    result = s.execute(
                        update(CandidateRow)
                        .where(self._mine(CandidateRow), CandidateRow.key == key,
                               CandidateRow.proposed_index.is_(None))
                        .values(proposed_index=index)
                    )
                    return index if result.rowcount == 1 else None
            except IntegrityError:
                continue
        raise StoreError(f"store {self.url}: could not claim a proposal index for {key} (heavy contention)")

    def proposals(self) -> list[Candidate]:
        """Candidates the strategy proposed, in the order it proposed them."""
        with self._session() as s:
            rows = s.scalars(
                select(CandidateRow).where(self._mine(CandidateRow), CandidateRow.proposed_index.is_not(None))
                .order_by(CandidateRow.proposed_index)
            )
            return [candidate_from_row(r) for r in rows]

    # ------------------------------------------------------------------ latency

    def add_latency(self, latency: Latency) -> None:
        self.add_latencies([latency])

    def add_latencies(self, latencies: Sequence[Latency]) -> None:
        """Store latency figures; a figure already stored for (model, device) is kept, unless it was
        predicted and the new one measured (a measurement settles a prediction)."""
        if not latencies:
            return
        try:
            self._add_latencies(latencies)
        except IntegrityError:  # another worker stored some of them meanwhile
            self._add_latencies(latencies)

    def _add_latencies(self, latencies: Sequence[Latency]) -> None:
        sid = self._sid()
        with self._session() as s:
            keys = [lat.arch_key for lat in latencies]
            existing = {
                (row.arch_key, row.device_key): row
                for row in s.scalars(select(LatencyRow).where(LatencyRow.study_id == sid,
                                                              LatencyRow.arch_key.in_(keys)))
            }
            now = _now()
            for lat in latencies:
                row = existing.get((lat.arch_key, lat.device_key))
                if row is not None and row.source == "predicted" and lat.source == "measured":
                    row.source, row.median_ms = lat.source, lat.median_ms
                    row.detail_json, row.created_at = json.dumps(lat.detail, sort_keys=True), now
                    continue
                if row is not None or (lat.arch_key, lat.device_key) in existing:
                    continue
                existing[(lat.arch_key, lat.device_key)] = None
                s.add(LatencyRow(
                    study_id=sid, arch_key=lat.arch_key, device_key=lat.device_key, source=lat.source, median_ms=lat.median_ms,
                    detail_json=json.dumps(lat.detail, sort_keys=True), created_at=now,
                ))

    def latencies(self, device_key: str | None = None) -> dict[str, Latency]:
        """Latency figures by architecture key (for one device, or all)."""
        with self._session() as s:
            query = select(LatencyRow).where(self._mine(LatencyRow))
            if device_key is not None:
                query = query.where(LatencyRow.device_key == device_key)
            return {r.arch_key: latency_from_row(r) for r in s.scalars(query)}

    # ------------------------------------------------------------------ trainings

    def claim_training(
        self, arch_key: str, epochs: float, *, worker: str, stale_before: datetime, dead_workers: Sequence[str] = ()
    ) -> bool:
        """Claim a training for ``worker``: a new one, a failed one, or one whose worker stopped beating.

        Exactly one of several workers claiming the same training at once succeeds.

        Args:
            stale_before: a running training whose last heartbeat is older than this is taken over.
            dead_workers: workers known to be gone (e.g. a dead process on this host); their trainings
                are taken over at once.
        """
        sid = self._sid()
        return self._claim(TrainingRow, [TrainingRow.study_id == sid, TrainingRow.arch_key == arch_key,
                                         TrainingRow.epochs == epochs],
                           lambda now: TrainingRow(study_id=sid, arch_key=arch_key, epochs=epochs,
                                                   status=TrainingStatus.RUNNING, worker=worker, heartbeat_at=now,
                                                   started_at=now),
                           worker=worker, stale_before=stale_before, dead_workers=dead_workers)

    def _claim(self, row_class: type[TrainingRow | JobRow], match: list[Any], new_row: Callable[[datetime], Any],
               *, worker: str, stale_before: datetime, dead_workers: Sequence[str]) -> bool:
        """The claim rule of trainings and jobs: insert the row, or take over one that is not done and
        is failed, already ours, stale, or held by a dead worker. One concurrent claimer wins."""
        now = _now()
        try:
            with self._session() as s:
                exists = s.scalar(select(row_class.id).where(*match))
                if exists is None:
                    s.add(new_row(now))
                    return True
                takeable = or_(
                    row_class.status == TrainingStatus.FAILED, row_class.worker == worker,
                    row_class.heartbeat_at < stale_before, row_class.worker.in_(list(dead_workers)),
                )
                result = s.execute(
                    update(row_class)
                    .where(row_class.id == exists, row_class.status != TrainingStatus.DONE, takeable)
                    .values(status=TrainingStatus.RUNNING, worker=worker, heartbeat_at=now)
                )
                return result.rowcount == 1
        except IntegrityError:
            return False  # another worker inserted it first

    def heartbeat(self, arch_key: str, epochs: float, *, worker: str) -> bool:
        """Refresh a claimed training's heartbeat; False if another worker has taken it over."""
        with self._session() as s:
            result = s.execute(
                update(TrainingRow)
                .where(*self._one_training(arch_key, epochs), TrainingRow.worker == worker,
                       TrainingRow.status == TrainingStatus.RUNNING)
                .values(heartbeat_at=_now())
            )
            return result.rowcount == 1

    def release_training(self, arch_key: str, epochs: float, *, worker: str) -> None:
        """Forget a training ``worker`` claimed and never started (nothing of it is stored)."""
        with self._session() as s:
            s.execute(delete(TrainingRow).where(*self._one_training(arch_key, epochs), TrainingRow.worker == worker,
                                                TrainingRow.status == TrainingStatus.RUNNING))

    def fail_training(self, arch_key: str, epochs: float) -> bool:
        """Mark a finished training to be done again (its checkpoint is gone); any worker may claim it.

        Only a finished training changes: False when it is not one (another worker found the
        checkpoint gone first and may be training it again), so that no worker's claim is undone.
        """
        with self._session() as s:
            changed = s.execute(update(TrainingRow).where(*self._one_training(arch_key, epochs),
                                                          TrainingRow.status == TrainingStatus.DONE)
                                .values(status=TrainingStatus.FAILED))
            return changed.rowcount > 0

    def _one_training(self, arch_key: str, epochs: float) -> tuple[Any, ...]:
        """The conditions that pick one training of this store's study."""
        return self._mine(TrainingRow), TrainingRow.arch_key == arch_key, TrainingRow.epochs == epochs

    def training(self, arch_key: str, epochs: float) -> Training | None:
        """One training as it is stored now (None if never started)."""
        with self._session() as s:
            row = s.scalar(select(TrainingRow).where(*self._one_training(arch_key, epochs)))
            return None if row is None else training_from_row(row, checkpoint=self._real_path(row.checkpoint))

    def finish_training(
        self, arch_key: str, epochs: float, *, accuracy: float, checkpoint: str | None, seconds: float,
        resumed_from_epochs: float | None = None,
    ) -> None:
        with self._session() as s:
            row = s.scalar(select(TrainingRow).where(*self._one_training(arch_key, epochs)))
            if row is None:
                raise StoreError(f"training of {arch_key} at {epochs} epochs was never started in {self.url}")
            if row.status == TrainingStatus.DONE:
                return  # finished already (by a worker presumed dead that was only slow): keep the first result
            row.status, row.accuracy, row.checkpoint = TrainingStatus.DONE, accuracy, self._stored_path(checkpoint)
            row.seconds, row.finished_at, row.resumed_from_epochs = seconds, _now(), resumed_from_epochs

    def trainings(self, *, status: str | None = None) -> list[Training]:
        with self._session() as s:
            query = select(TrainingRow).where(self._mine(TrainingRow))
            if status is not None:
                query = query.where(TrainingRow.status == status)
            rows = s.scalars(query.order_by(TrainingRow.id))
            return [training_from_row(r, checkpoint=self._real_path(r.checkpoint)) for r in rows]

    # ------------------------------------------------------------------ jobs

    def claim_job(self, name: str, *, worker: str, stale_before: datetime, dead_workers: Sequence[str] = ()) -> bool:
        """Claim a unit of work by name, with the same rule as :meth:`claim_training`; False when another live
        worker holds it or it is done."""
        sid = self._sid()
        return self._claim(JobRow, [JobRow.study_id == sid, JobRow.name == name],
                           lambda now: JobRow(study_id=sid, name=name, status=TrainingStatus.RUNNING, worker=worker,
                                              heartbeat_at=now, started_at=now),
                           worker=worker, stale_before=stale_before, dead_workers=dead_workers)

    def beat_job(self, name: str, *, worker: str) -> bool:
        """Refresh a claimed job's heartbeat; False if another worker has taken it over."""
        with self._session() as s:
            result = s.execute(update(JobRow).where(
                self._mine(JobRow), JobRow.name == name, JobRow.worker == worker,
                JobRow.status == TrainingStatus.RUNNING).values(heartbeat_at=_now()))
            return result.rowcount == 1

    def finish_job(self, name: str, *, worker: str) -> None:
        """Mark a job ``worker`` holds done (its results are stored); no one claims it again."""
        with self._session() as s:
            s.execute(update(JobRow).where(self._mine(JobRow), JobRow.name == name, JobRow.worker == worker)
                      .values(status=TrainingStatus.DONE, finished_at=_now()))

    def release_job(self, name: str, *, worker: str) -> None:
        """Give back a job ``worker`` holds unfinished (e.g. its checkpoint is lost): any worker may claim it."""
        with self._session() as s:
            s.execute(delete(JobRow).where(self._mine(JobRow), JobRow.name == name, JobRow.worker == worker,
                                           JobRow.status == TrainingStatus.RUNNING))

    def jobs(self) -> list[Job]:
        with self._session() as s:
            return [job_from_row(r) for r in s.scalars(select(JobRow).where(self._mine(JobRow)).order_by(JobRow.id))]

    # ------------------------------------------------------------------ precision

    def add_precision(self, result: PrecisionResult) -> None:
        """Store one (model, format) result; an existing one is never overwritten."""
        try:
            self._add_precision(result)
        except IntegrityError:
            pass  # another worker stored the same result first

    def _add_precision(self, result: PrecisionResult) -> None:
        sid = self._sid()
        with self._session() as s:
            existing = s.scalar(select(PrecisionRow).where(
                PrecisionRow.study_id == sid, PrecisionRow.arch_key == result.arch_key, PrecisionRow.epochs == result.epochs,
                PrecisionRow.format_name == result.format_name, PrecisionRow.finetuned == result.finetuned,
            ))
            if existing is None:
                fields = {**record_fields(result), "checkpoint": self._stored_path(result.checkpoint)}
                s.add(PrecisionRow(**fields, study_id=sid, created_at=_now()))

    def precision_results(self) -> list[PrecisionResult]:
        with self._session() as s:
            rows = s.scalars(select(PrecisionRow).where(self._mine(PrecisionRow)).order_by(PrecisionRow.id))
            return [precision_from_row(r, checkpoint=self._real_path(r.checkpoint)) for r in rows]

    def set_full_accuracy(self, arch_key: str, epochs: float, format_name: str, *, finetuned: bool,
                          accuracy: float) -> None:
        """Record a result's accuracy on the whole test split beside the one it was ranked by (on a subset)."""
        with self._session() as s:
            s.execute(update(PrecisionRow).where(
                self._mine(PrecisionRow), PrecisionRow.arch_key == arch_key, PrecisionRow.epochs == epochs,
                PrecisionRow.format_name == format_name, PrecisionRow.finetuned == finetuned,
            ).values(full_accuracy=accuracy))

    def add_skipped(self, skipped: SkippedFormat) -> None:
        """Record a format the precision stage did not evaluate; one already recorded is kept."""
        sid = self._sid()
        try:
            with self._session() as s:
                existing = s.scalar(select(SkippedFormatRow.id).where(
                    SkippedFormatRow.study_id == sid, SkippedFormatRow.arch_key == skipped.arch_key,
                    SkippedFormatRow.epochs == skipped.epochs, SkippedFormatRow.format_name == skipped.format_name,
                ))
                if existing is None:
                    s.add(SkippedFormatRow(**record_fields(skipped), study_id=sid, created_at=_now()))
        except IntegrityError:
            pass  # another worker recorded it first

    def skipped_formats(self) -> list[SkippedFormat]:
        with self._session() as s:
            rows = s.scalars(select(SkippedFormatRow).where(self._mine(SkippedFormatRow)).order_by(SkippedFormatRow.id))
            return [skipped_from_row(r) for r in rows]


def _createdb_hint(url: str, exc: SQLAlchemyError) -> str:
    """For a PostgreSQL database that does not exist: the command that creates it (servers never do it themselves)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not re.search(r'database ".*" does not exist', str(exc)):
        return ""
    options = [f"{flag} {value}" for flag, value in (("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username))
               if value]
    return f"; create it first: createdb {' '.join([*options, parsed.database or ''])}"


def _db_message(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
