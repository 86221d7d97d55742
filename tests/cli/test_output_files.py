"""Every file a command writes follows one rule: new unless --overwrite, never a folder, never a store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(code: int, err: str) -> str:
    assert code == 2 and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _no_temporary_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_report_never_replaces_its_store_nor_writes_into_a_folder(one_model_store, cli, tmp_path):
    store = str(one_model_store)
    before = _sha(one_model_store)
    for extra in ((), ("--overwrite",)):
        err = _one_line(*cli("report", store, "--out", store, *extra)[::2])
        assert "is a SQLite database" in err
    assert _sha(one_model_store) == before
    err = _one_line(*cli("report", store, "--out", str(tmp_path), "--overwrite")[::2])
    assert "it is a folder" in err
    _no_temporary_files(tmp_path)


def test_report_replaces_a_file_only_when_told(one_model_store, cli, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("my notes")
    err = _one_line(*cli("report", str(one_model_store), "--out", str(out))[::2])
    assert "already exists; choose another path or pass --overwrite" in err
    assert out.read_text() == "my notes"
    code, _, err = cli("report", str(one_model_store), "--out", str(out), "--overwrite")
    assert code == 0, err
    assert "mobilenetv2/s6/3" in out.read_text(encoding="utf-8")
    assert (out.stat().st_mode & 0o777) == 0o644
    _no_temporary_files(tmp_path)


def test_no_file_beside_a_store_is_written_over(one_model_store, cli, tmp_path):
    """A store's journal (``-wal``) is part of it: replacing one would lose what it holds."""
    wal = Path(f"{one_model_store}-wal")
    wal.write_bytes(b"")
    err = _one_line(*cli("report", str(one_model_store), "--out", str(wal), "--overwrite")[::2])
    assert "is a SQLite database" in err and wal.read_bytes() == b""


def test_init_follows_the_rule(cli, tmp_path, one_model_store):
    path = tmp_path / "mine.toml"
    path.write_text("mine")
    err = _one_line(*cli("init", str(path))[::2])
    assert "already exists; choose another path or pass --overwrite" in err and path.read_text() == "mine"
    for option in ("--overwrite", "--force"):
        path.write_text("mine")
        code, _, err = cli("init", str(path), option)
        assert code == 0, err
        assert 'name = "mine"' in path.read_text()
    before = _sha(one_model_store)
    _one_line(*cli("init", str(one_model_store), "--overwrite")[::2])
    assert _sha(one_model_store) == before
    _one_line(*cli("init", str(tmp_path), "--overwrite")[::2])
    _no_temporary_files(tmp_path)


def test_calibrate_checks_its_output_before_timing_anything(cli, tmp_path, one_model_store):
    out = tmp_path / "p.json"
    out.write_text("{}")
    never_read = str(tmp_path / "none.json")  # the check comes first, so this is never looked at
    err = _one_line(*cli("latency", "calibrate", "--out", str(out), "--released", never_read)[::2])
    assert "predictor" in err and "pass --overwrite" in err and out.read_text() == "{}"
    before = _sha(one_model_store)
    err = _one_line(*cli("latency", "calibrate", "--out", str(one_model_store), "--overwrite",
                         "--released", never_read)[::2])
    assert "is a SQLite database" in err and _sha(one_model_store) == before
    err = _one_line(*cli("latency", "calibrate", "--out", str(tmp_path), "--overwrite", "--released", never_read)[::2])
    assert "it is a folder" in err


def test_train_wants_a_folder_for_its_checkpoint(cli, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    quick = ("train", "mobilenetv2", "s6", "0", "--data", "digits", "--epochs", "1")
    err = _one_line(*cli(*quick, "--out", str(taken))[::2])
    assert "is a file, not a folder" in err
    err = _one_line(*cli(*quick, "--out", str(taken / "run"))[::2])
    assert "notes.txt is a file, not a folder" in err
    assert taken.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_report_into_a_folder_one_may_not_write(one_model_store, cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    err = _one_line(*cli("report", str(one_model_store), "--out", str(locked / "r.html"))[::2])
    assert "not writable" in err
