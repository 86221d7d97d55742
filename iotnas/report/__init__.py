"""The study report: one self-contained HTML page with interactive trade-off plots, the
Pareto fronts as tables, the study's settings and provenance; static figures on request.

>>> with Store.open("study.db", read_only=True) as store:
...     write_report(store, "report.html", static_dir="figures")
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from iotnas.errors import ExportError
from iotnas.files import check_folder, check_target, write_new
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


def write_report(
    store: Store, out: str | Path, *, static_dir: str | Path | None = None, overwrite: bool = False,
) -> ReportFiles:
    """Write the HTML report (and PNG + SVG figures into ``static_dir``), each file whole or not at all.

    Files follow :mod:`iotnas.files`: an existing one is replaced only with ``overwrite``, a
    folder or a database never.

    Raises:
        ExportError: no trained model, or an output location that cannot or may not be written.
    """
    from iotnas.report._static import write_static

    out = check_target(out, what="report", overwrite=overwrite, error=ExportError)
    if static_dir is not None:
        static_dir = check_folder(static_dir, what="figures folder", error=ExportError)
    data = collect(store)
    text = render_html(data)
    static: list[Path] = []
    if static_dir is not None:
        with tempfile.TemporaryDirectory(prefix=".iotnas-figures.") as tmp:
            made = write_static(data, Path(tmp))
            if static_dir.exists():  # check every figure before writing any
                for figure in made:
                    check_target(static_dir / figure.name, what="figure", overwrite=overwrite, error=ExportError)
            static_dir.mkdir(exist_ok=True)
            for figure in made:
                static.append(write_new(static_dir / figure.name, figure.read_bytes(), what="figure",
                                        overwrite=overwrite, error=ExportError))
    write_new(out, text, what="report", overwrite=overwrite, error=ExportError)
    return ReportFiles(html=out, static=tuple(static), n_points=len(data.points))


__all__ = ["PLOTS", "ReportData", "ReportFiles", "collect", "figures", "render_report", "write_report"]
