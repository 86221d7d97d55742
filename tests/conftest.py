"""Shared fixtures: where the real data lives, and how to run the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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
