"""What a report shows, gathered once from the store: points, fronts, limits, provenance."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import numpy as np

from iotnas import __version__
from iotnas.errors import ExportError
from iotnas.results.fronts import front_mask
from iotnas.results.limits import Limits
from iotnas.results.points import ModelPoint, study_points
from iotnas.store import SkippedFormat, Store
from iotnas.study import Study

#: (x objective, axis title, file stem) of the two trade-off plots.
PLOTS: tuple[tuple[str, str, str], ...] = (
    ("latency_ms", "Latency (ms, batch 1)", "accuracy-latency"),
    ("weight_bytes", "Weight memory (bytes)", "accuracy-memory"),
)

_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "plotly", "matplotlib", "sqlalchemy")


@dataclass(frozen=True)
class Fronts:
    """Front masks over :attr:`ReportData.points` for one x objective (accuracy is the other)."""

    all: np.ndarray  # across formats, feasible or not
    feasible: np.ndarray  # across formats, feasible points only
    per_format: np.ndarray  # one front per number format


@dataclass(frozen=True)
class ReportData:
    study_name: str
    points: list[ModelPoint]
    fronts: dict[str, Fronts]  # x objective -> masks
    front_3d: np.ndarray  # accuracy, weight bytes and latency together, feasible points only
    limits: Limits
    study: Study | None  # None for a store that never recorded one
    counts: dict[str, int]  # candidates by status
    devices: dict[str, dict[str, Any]]  # latency device key -> {"sources": {source: models}, "models", "detail"}
    provenance: dict[str, str] = field(default_factory=dict)
    skipped: list[SkippedFormat] = field(default_factory=list)  # formats the precision stage did not evaluate

    @property
    def formats(self) -> list[str]:
        """Formats present, widest first."""
        bits = {p.format_name: p.bits for p in self.points}
        return sorted(bits, key=lambda f: (-bits[f], f))

    @property
    def families(self) -> list[str]:
        return sorted({p.space for p in self.points})


def collect(store: Store) -> ReportData:
    """Read everything a report needs from ``store``.

    Raises:
        ExportError: the store holds no trained model yet.
    """
    meta = store.meta()
    study = store.study()
    limits = study.constraints if study is not None else Limits()
    points = study_points(store, limits=limits)
    if not points:
        raise ExportError(
            f"store {store.url} holds no trained model yet; run 'iotnas search STUDY.toml' until some are trained"
        )
    fronts = {
        x: Fronts(
            all=front_mask(points, ("accuracy", x)),
            feasible=front_mask(points, ("accuracy", x), feasible_only=True),
            per_format=front_mask(points, ("accuracy", x), per_format=True),
        )
        for x, _, _ in PLOTS
    }
    counts: dict[str, int] = {}
    for c in store.candidates():
        counts[c.status] = counts.get(c.status, 0) + 1
    devices: dict[str, dict[str, Any]] = {}
    for lat in store.latencies().values():
        entry = devices.setdefault(lat.device_key, {"sources": {}, "models": 0, "detail": lat.detail})
        entry["models"] += 1
        entry["sources"][lat.source] = entry["sources"].get(lat.source, 0) + 1  # measured vs predicted
    return ReportData(
        study_name=meta.get("study_name") or (study.name if study is not None else "study"),
        points=points, fronts=fronts,
        front_3d=front_mask(points, ("accuracy", "weight_bytes", "latency_ms"), feasible_only=True),
        limits=limits, study=study, counts=counts, devices=devices,
        provenance=_provenance(meta), skipped=store.skipped_formats(),
    )


def _provenance(meta: dict[str, str]) -> dict[str, str]:
    versions = []
    for name in _PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return {
        "Store created": meta.get("created_at", "?").replace("T", " ")[:19] + " UTC",
        "Written by": f"iotnas {meta.get('iotnas_version', '?')} (schema {meta.get('schema_version', '?')})",
        "Study fingerprint": meta.get("study_fingerprint", "-"),
        "Report made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "Report made by": f"iotnas {__version__}, Python {platform.python_version()}",
        "Libraries": ", ".join(versions),
        "Machine": f"{platform.system()} {platform.release()} {platform.machine()}",
    }
