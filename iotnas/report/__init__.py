"""The study report: one self-contained HTML page with interactive trade-off plots, the
Pareto fronts as tables, the study's settings and provenance; static figures on request.

>>> with Store.open("study.db", create=False) as store:
...     write_report(store, "report.html", static_dir="figures")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iotnas.errors import ExportError
from iotnas.report._data import PLOTS, ReportData, collect
from iotnas.report._figures import figures
from iotnas.report._html import render_html
from iotnas.store import Store


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    static: tuple[Path, ...]
    n_points: int  # model x format points plotted


def render_report(store: Store) -> str:
    """The report of ``store`` as an HTML string.

    Raises:
        ExportError: the store holds no trained model.
    """
    return render_html(collect(store))


def write_report(store: Store, out: str | Path, *, static_dir: str | Path | None = None) -> ReportFiles:
    """Write the HTML report (and PNG + SVG figures into ``static_dir``), each file whole or not at all.

    Raises:
        ExportError: no trained model, or an output location that cannot be written.
    """
    from iotnas.report._static import write_static

    data = collect(store)
    out = Path(out)
    _check_parent(out)
    text = render_html(data)
    static: list[Path] = []
    if static_dir is not None:
        static_dir = Path(static_dir)
        _check_parent(static_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{static_dir.name}.", dir=static_dir.parent))
        try:
            names = [p.name for p in write_static(data, tmp)]
            static_dir.mkdir(exist_ok=True)
            for name in names:
                os.replace(tmp / name, static_dir / name)
                static.append(static_dir / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    fd, tmp_html = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp_html, 0o644)
        os.replace(tmp_html, out)
    except BaseException:
        Path(tmp_html).unlink(missing_ok=True)
        raise
    return ReportFiles(html=out, static=tuple(static), n_points=len(data.points))


def _check_parent(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir() and path.suffix == ".html":
        raise ExportError(f"cannot write {path}: it is a folder")


__all__ = ["PLOTS", "ReportData", "ReportFiles", "collect", "figures", "render_report", "write_report"]
