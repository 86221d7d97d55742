"""Stores on both backends, and the frozen schema 1 store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, text

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-v1"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """An empty store location: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of the store iotnas wrote before migrations existed (its checkpoints beside it)."""
    folder = tmp_path / "store-v1"
    shutil.copytree(FIXTURE, folder)
    return folder / "store-v1.db"


def _engine(url: str):
    return create_engine(url if "://" in url else f"sqlite:///{url}")


def _snapshot(url: str) -> dict[str, list[tuple]]:
    engine = _engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as connection:
            return {name: sorted(map(tuple, connection.execute(table.select())), key=repr)
                    for name, table in tables.tables.items()}
    finally:
        engine.dispose()


def _sql(url: str, *statements: str) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def snapshot():
    """``snapshot(url)``: every row of every table, to show that a refused store was left alone."""
    return _snapshot


@pytest.fixture
def sql():
    """``sql(url, *statements)``: change a store behind iotnas's back, in one transaction."""
    return _sql


@pytest.fixture
def at_once():
    """``at_once(open_one, n)``: call ``open_one`` from ``n`` threads released together; the errors they raised."""
    import threading

    def run(open_one, n: int) -> list[BaseException]:
        start, errors = threading.Barrier(n), []

        def one() -> None:
            start.wait()
            try:
                open_one()
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors

    return run
