"""One rule for every file iotnas writes, so no command can clobber what it should not.

A target must not exist unless the caller allows overwriting it, and even then it is never
a folder nor a SQLite database (a study store, or one of its ``-wal``/``-shm``/``-journal``
files): replacing one loses a study. The bytes go to a temporary file in the target's
folder, are synced to disk, and are renamed into place, so a target is whole or untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from iotnas.errors import ConfigError, IotnasError

SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def is_sqlite_database(path: str | Path) -> bool:
    """Whether ``path`` is a SQLite database file (by its 16-byte header)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def _database_of(path: Path) -> Path | None:
    """The SQLite database ``path`` is, or is a side file of; None when neither."""
    if is_sqlite_database(path):
        return path
    for suffix in _SQLITE_SIDE_FILES:
        if path.name.endswith(suffix) and is_sqlite_database(path.with_name(path.name[: -len(suffix)])):
            return path.with_name(path.name[: -len(suffix)])
    return None


def _check_folder_of(path: Path, what: str, error: type[IotnasError]) -> None:
    parent = path.parent
    if not parent.exists():
        raise error(f"cannot write {what} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise error(f"cannot write {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"cannot write {what} {path}: folder {parent} is not writable")


def check_target(
    path: str | Path, *, what: str, overwrite: bool = False, error: type[IotnasError] = ConfigError,
) -> Path:
    """Check, before any work, that :func:`write_new` may write ``path``; returns it as a Path.

    Args:
        what: what the file is, for messages ("report", "predictor").
        overwrite: an existing file may be replaced (never a folder or a database).
        error: the error type to raise.
    """
    path = Path(path)
    database = _database_of(path)
    if database is not None:
        raise error(f"will not write {what} {path}: {database} is a SQLite database (a study store?); "
                    "choose another path")
    if path.is_dir():
        raise error(f"cannot write {what} {path}: it is a folder; give a file path")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise error(f"{what} {path} already exists; choose another path or pass --overwrite")
    _check_folder_of(path, what, error)
    return path


def check_folder(
    path: str | Path, *, what: str, new: bool = False, parents: bool = False, error: type[IotnasError] = ConfigError,
) -> Path:
    """Check that files may be written into the folder ``path``; returns it as a Path.

    Args:
        new: the folder must not exist yet (it is made whole by :func:`move_into_place`).
        parents: missing parent folders will be created; the nearest existing one must be a writable folder.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise error(f"{what} {path} is a file, not a folder; give a folder")
        if new:
            raise error(f"{what} {path} already exists; give a new folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise error(f"cannot write into {what} {path}: it is not writable")
        return path
    if parents:
        nearest = next(p for p in path.parents if p.exists())
        if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
            state = "a file, not a folder" if not nearest.is_dir() else "not writable"
            raise error(f"cannot create {what} {path}: {nearest} is {state}")
        return path
    _check_folder_of(path, what, error)
    return path


def write_new(
    path: str | Path, data: bytes | str, *, what: str, overwrite: bool = False, error: type[IotnasError] = ConfigError,
) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole, under the rule of :func:`check_target`.

    Raises:
        error: the target breaks the rule, or cannot be written (the target is then untouched).
    """
    path = check_target(path, what=what, overwrite=overwrite, error=error)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the file is the user's to share
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise error(f"cannot write {what} {path}: {exc.strerror}") from None
    move_into_place(Path(tmp), path, what=what, overwrite=overwrite, error=error)
    return path


def move_into_place(
    tmp: Path, path: Path, *, what: str, overwrite: bool = False, error: type[IotnasError] = ConfigError,
) -> None:
    """Sync the finished file or folder ``tmp`` (in ``path``'s folder) and rename it to ``path``.

    The target is checked again just before, as something may have appeared there meanwhile;
    ``tmp`` is removed whatever happens.
    """
    folder = tmp.is_dir()
    try:
        if folder:
            check_folder(path, what=what, new=True, error=error)
        else:
            check_target(path, what=what, overwrite=overwrite, error=error)
        try:
            for file in [p for p in tmp.iterdir() if p.is_file()] if folder else [tmp]:
                _fsync(file)
            os.replace(tmp, path)  # never over a folder that is not empty
            _fsync(path.parent)
        except OSError as exc:
            raise error(f"cannot write {what} {path}: {exc.strerror}") from None
    finally:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
