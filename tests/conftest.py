"""Shared fixtures: where the real data lives, and how to run the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# `iotnas search` starts one worker process per core by default; the suite's many small searches run
# in one process each (worker processes would add seconds of start-up to every one of them), and the
# tests of the default remove this (tests/cli/test_progress.py, tests/search/test_final_stage.py).
os.environ.setdefault("IOTNAS_WORKERS", "1")

# The suite runs in one pytest-xdist process per core (pyproject.toml): each test then gets one core,
# and torch's thread pool in each process (and in the searches a test starts) is one thread, not one
# per core, so two processes do not fight over both cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

MAX_TEST_PROCESSES = 4  # more would start as many PostgreSQL servers and local Ray clusters


def pytest_xdist_auto_num_workers(config) -> int:
    """``--numprocesses=auto``: one test process per core this run may use, at most MAX_TEST_PROCESSES."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_TEST_PROCESSES))


def _shared_data_dir() -> Path:
    return Path(os.environ.get("IOTNAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets and the released model set, read in place (never copied).

    Missing data fails the run in CI (where it must be present) and skips elsewhere.
    """
    path = _shared_data_dir()
    if not path.is_dir():
        message = f"shared data not found at {path}; set IOTNAS_SHARED_DATA"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def released_dir(shared_data: Path) -> Path:
    """Folder with the released NetConfigs.json and results_RaspPi.json."""
    return shared_data / "iotnets"


@pytest.fixture
def cli():
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    return _CliRunner()


class _CliRunner:
    def __call__(self, *args: str) -> tuple[int, str, str]:
        import contextlib
        import io

        from iotnas.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL server on 127.0.0.1 for the session (Debian's packages), or the one given
    by IOTNAS_TEST_POSTGRES_URL. Yields ``(base_url, control)`` where control(stop|start) drives it."""
    import shutil
    import socket
    import subprocess

    given = os.environ.get("IOTNAS_TEST_POSTGRES_URL")
    if given:
        yield given, None
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="iotnas-pg-"))  # outside pytest's root-only folder
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "iotnas", "--no-sync")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"

    def control(action: str) -> None:
        if action == "start":
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        else:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    control("start")
    try:
        yield f"postgresql+psycopg://iotnas@127.0.0.1:{port}", control
    finally:
        try:
            control("stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server."""
    import uuid

    from sqlalchemy import create_engine, text

    base, _ = postgres_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{base}/{name}"
