"""Read the files of a dataset from a folder or from inside a tar archive, and verify them.

Loaders see a :class:`FileSet`: base names mapped to readers, so that the same loader handles
``cifar-10-batches-bin/`` on disk and ``cifar-10-binary.tar.gz`` without extracting anything.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tarfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from iotnas.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# Digests of dataset files (as published, known re-encodings, Fashion-MNIST's): a data file, with its sources.
_KNOWN = json.loads(resources.files("iotnas.data").joinpath("known_files.json").read_text(encoding="utf-8"))
KNOWN_DIGESTS: dict[str, tuple[str, str, str]] = {  # name: (dataset, algorithm, digest)
    name: (d["dataset"], d["algorithm"], d["digest"]) for name, d in _KNOWN["published"].items()
}
KNOWN_COPIES_SHA256: dict[str, tuple[str, str]] = {name: (d["digest"], d["what"]) for name, d in _KNOWN["copies_sha256"].items()}
FASHION_SHA256: dict[str, str] = _KNOWN["fashion_mnist_sha256"]


@dataclass(frozen=True)
class FileSet:
    """The regular files of a folder (and its immediate sub-folders) or of a tar archive, by base name.

    An archive is read in one pass (random access into a gzipped tar would decompress it once per
    member); a folder's files are read on demand.
    """

    origin: Path
    members: dict[str, str]  # base name -> path on disk, or member name inside the archive
    blobs: dict[str, bytes] | None  # archive contents, by base name; None for a folder

    @staticmethod
    def open(path: Path) -> FileSet:
        if path.is_dir():
            members: dict[str, str] = {}
            for child in sorted(path.iterdir()):
                if child.is_file():
                    members.setdefault(child.name, str(child))
                elif child.is_dir():
                    for grandchild in sorted(child.iterdir()):
                        if grandchild.is_file():
                            members.setdefault(grandchild.name, str(grandchild))
            return FileSet(path, members, None)
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
            members, blobs = {}, {}
            try:
                with tarfile.open(path) as tar:
                    for info in tar:
                        handle = tar.extractfile(info) if info.isfile() else None
                        if handle is not None:
                            base = Path(info.name).name
                            members.setdefault(base, info.name)
                            blobs.setdefault(base, handle.read())
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(
                    f"{path}: cannot read the archive ({exc}); it is truncated or corrupt, download it again"
                ) from exc
            return FileSet(path, members, blobs)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder; give the folder or archive holding the dataset")
        raise DataError(f"{path}: not a dataset folder or a .tar.gz archive")

    @property
    def archive(self) -> bool:
        return self.blobs is not None

    def has(self, name: str) -> bool:
        return name in self.members

    def where(self, name: str) -> str:
        """A location a user can find: the file, or ``archive:member``."""
        return f"{self.origin}:{self.members[name]}" if self.archive else self.members[name]

    def raw(self, name: str) -> bytes:
        """The stored bytes of one file (still gzipped if it is)."""
        if name not in self.members:
            raise DataError(
                f"{self.origin}: missing {name}; the dataset is incomplete, restore the file or download it again"
            )
        if self.blobs is not None:
            return self.blobs[name]
        try:
            return Path(self.members[name]).read_bytes()
        except OSError as exc:
            raise DataError(f"{self.where(name)}: cannot read ({exc})") from exc

    def content(self, name: str, raw: bytes) -> bytes:
        """``raw`` gunzipped when the file name ends in ``.gz``."""
        if not name.endswith(".gz"):
            return raw
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(
                f"{self.where(name)}: cannot decompress ({exc}); the file is truncated or corrupt, download it again"
            ) from exc


def digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def verify_known(name: str, raw: bytes, where: str) -> str | None:
    """Compare a file with the publisher's digest, if one is known.

    Returns the dataset the file was identified as (``"fashion-mnist"``, ``"mnist"``,
    ``"cifar10"``) or ``None``. A mismatch is logged, not raised: re-encoded copies (such as
    a CIFAR-10 decoded from JPEG) are legitimate, and the structural checks catch real damage.
    """
    if name in FASHION_SHA256 and digest(raw, "sha256") == FASHION_SHA256[name]:
        log.info("%s: sha256 matches the official Fashion-MNIST file", where)
        return "fashion-mnist"
    if name in KNOWN_DIGESTS:
        dataset, algorithm, expected = KNOWN_DIGESTS[name]
        if digest(raw, algorithm) == expected:
            log.info("%s: %s matches the official %s file", where, algorithm, dataset)
            return dataset
        label = "MNIST or Fashion-MNIST" if name in FASHION_SHA256 else dataset
        log.warning("%s: digest differs from the official %s file (a re-encoded copy?); structure checked only", where, label)
        return None
    if name in KNOWN_COPIES_SHA256:
        expected, label = KNOWN_COPIES_SHA256[name]
        if digest(raw, "sha256") == expected:
            log.info("%s: sha256 identifies it as %s", where, label)
            return None
    log.debug("%s: no published digest known; structure checked only", where)
    return None
