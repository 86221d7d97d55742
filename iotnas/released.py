"""The authors' released model set: 1,617 trained (space, law, id) with counts, accuracy, Pi latency.

Reads ``NetConfigs.json`` and, when present beside it, ``results_RaspPi.json`` from a folder
the user names (never copied into the project). Both files are top-level JSON arrays of
flat records in the same order; the Pi file adds ``t_avg``/``t_std`` in milliseconds
(batch 1, 10 passes, first 5 dropped, mean of the last 5, on a Raspberry Pi 3B+).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from iotnas.arch import Arch
from iotnas.errors import DataError, IotnasError

log = logging.getLogger(__name__)

CONFIGS_FILE = "NetConfigs.json"
PI_FILE = "results_RaspPi.json"
#: Environment variable naming the folder that holds the released files.
ENV_DIR = "IOTNAS_RELEASED_DIR"
DEFAULT_DIR = Path("..") / "shared" / "data" / "iotnets"  # relative to the current directory

_CONFIG_KEYS = ("acc", "flops", "id", "law", "params", "runid", "spacename")
_PI_KEYS = ("t_avg", "t_std")


@dataclasses.dataclass(frozen=True, slots=True)
class ReleasedModel:
    """One released, trained model."""

    #: Position in NetConfigs.json (the authors' README names models by it, e.g. 687).
    index: int
    arch: Arch
    #: CIFAR-10 test accuracy after the authors' training, a fraction in [0, 1].
    accuracy: float
    #: Stored values, the ``params`` field (every state_dict tensor).
    params: int
    #: Operation count under the released rules (see :mod:`iotnas.cost`).
    flops: int
    #: The authors' training-run id (their checkpoint name).
    runid: str
    #: Mean Raspberry Pi 3B+ latency in ms, or None without ``results_RaspPi.json``.
    latency_ms: float | None = None
    #: Standard deviation of the same 5 timings, in ms.
    latency_std_ms: float | None = None


def released_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder to read: ``path``, else ``$IOTNAS_RELEASED_DIR``, else ``../shared/data/iotnets``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else DEFAULT_DIR


def load_released(path: str | os.PathLike[str] | None = None) -> list[ReleasedModel]:
    """Load the released models in file order.

    Args:
        path: folder holding ``NetConfigs.json`` (and optionally ``results_RaspPi.json``);
            see :func:`released_dir` for the default.

    Raises:
        DataError: the folder or ``NetConfigs.json`` is missing, a file is not the expected
            JSON array of records, or the two files disagree.
    """
    folder = released_dir(path)
    configs_path = folder / CONFIGS_FILE
    if not configs_path.is_file():
        raise DataError(
            f"released model set not found: no {CONFIGS_FILE} in {folder}; "
            f"pass the folder holding it or set {ENV_DIR}"
        )
    configs = _read_records(configs_path, _CONFIG_KEYS)
    pi_path = folder / PI_FILE
    timings: list[dict[str, Any]] | None = None
    if pi_path.is_file():
        timings = _read_records(pi_path, _CONFIG_KEYS + _PI_KEYS)
        if len(timings) != len(configs):
            raise DataError(f"{pi_path} has {len(timings)} records but {configs_path} has {len(configs)}")
    else:
        log.info("no %s in %s: released models have no latency", PI_FILE, folder)
    models = []
    for i, rec in enumerate(configs):
        pi = timings[i] if timings is not None else None
        if pi is not None and any(pi[k] != rec[k] for k in _CONFIG_KEYS):
            raise DataError(f"record {i} differs between {configs_path} and {pi_path}; the files do not belong together")
        models.append(_model(i, rec, pi, configs_path))
    return models


def _read_records(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; it should be the released JSON file, unmodified") from None
    if not isinstance(data, list):
        raise DataError(f"{path} should hold a JSON array of records, found {type(data).__name__}")
    for i, rec in enumerate(data):
        missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise DataError(f"{path}: record {i} lacks {', '.join(missing)}")
    return data


def _model(index: int, rec: dict[str, Any], pi: dict[str, Any] | None, path: Path) -> ReleasedModel:
    try:
        flops = float(rec["flops"])
        if not flops.is_integer():
            raise ValueError(f"flops {flops} is not integral")
        return ReleasedModel(
            index=index,
            arch=Arch(rec["spacename"], rec["law"], rec["id"]),
            accuracy=_finite(rec["acc"]),
            params=_int(rec["params"]),
            flops=int(flops),
            runid=str(rec["runid"]),
            latency_ms=_finite(pi["t_avg"]) if pi is not None else None,
            latency_std_ms=_finite(pi["t_std"]) if pi is not None else None,
        )
    except (IotnasError, TypeError, ValueError) as e:
        raise DataError(f"{path}: record {index} is malformed ({e})") from None


def _finite(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


__all__ = ["ReleasedModel", "load_released", "released_dir"]
