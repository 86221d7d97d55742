"""The HTML report opened in a real headless browser, the static figures, and bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from iotnas.results.fronts import front_mask
from iotnas.results.points import study_points
from iotnas.report import write_report
from iotnas.store import Store

from .conftest import ARTIFACTS, tabular_store

COUNT_POINTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(div => ({
    id: div.id,
    models: div.data.filter(t => t.meta && t.meta.role === 'models').reduce((n, t) => n + t.x.length, 0),
    feasibleFront: div.data.filter(t => t.meta && t.meta.front === 'Pareto front, feasible')
                           .reduce((n, t) => n + t.x.length, 0),
    drawn: div.querySelectorAll('.scatterlayer .points path').length,
}))"""


def open_report(browser, html: Path, screenshot: Path) -> tuple[list[dict], list[str], list[str]]:
    """Load the page offline; returns (per-plot counts, console errors, requests that left the file)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith("file://"):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    try:
        page.goto(html.as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=60_000)
        counts = page.evaluate(COUNT_POINTS)
        screenshot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return counts, errors, outside


def _expected(store_path: Path) -> dict[str, tuple[int, int]]:
    with Store.open(str(store_path), create=False) as store:
        points = study_points(store)
    timed = sum(p.latency_ms is not None for p in points)
    return {
        "plot-accuracy-latency": (timed, int(front_mask(points, ("accuracy", "latency_ms"), feasible_only=True).sum())),
        "plot-accuracy-memory": (len(points),
                                 int(front_mask(points, ("accuracy", "weight_bytes"), feasible_only=True).sum())),
    }


def check_in_browser(browser, store_path: Path, out: Path, screenshot: Path) -> None:
    with Store.open(str(store_path), create=False) as store:
        files = write_report(store, out)
    text = out.read_text(encoding="utf-8")
    assert "<script src" not in text  # self-contained: the plotting library is embedded
    counts, errors, outside = open_report(browser, out, screenshot)
    assert errors == []
    assert outside == []
    expected = _expected(store_path)
    assert {c["id"]: (c["models"], c["feasibleFront"]) for c in counts} == expected
    for c in counts:  # SVG scatter: every model and front marker is drawn
        assert c["drawn"] >= c["models"]
    assert files.n_points == expected["plot-accuracy-memory"][0]


def test_report_in_a_real_browser(browser, small_store, tmp_path):
    check_in_browser(browser, small_store, tmp_path / "report.html", ARTIFACTS / "report-small.png")


def test_report_tables_and_settings(small_store, tmp_path):
    with Store.open(str(small_store), create=False) as store:
        write_report(store, tmp_path / "r.html")
        points = study_points(store)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    mask = front_mask(points, ("accuracy", "latency_ms"), feasible_only=True)
    best = max((p for p in points if p.feasible), key=lambda p: p.accuracy)
    assert mask.sum() > 1 and best.key in text and f"{best.accuracy:.2%}" in text
    table = text.split('id="front-latency"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == mask.sum()
    for p in np.asarray(points, dtype=object)[mask]:
        assert f"<td>{p.key}</td>" in table
    assert "constraints.max_weight_bytes" in text and "32768" in text
    assert "released:raspberry-pi-3b+:torch" in text and "Provenance" in text
    settings = text.split("<h2>Study settings</h2>")[1].split("</table>")[0]
    for row in ("precision.winner</td><td>fewest_bytes", "precision.tolerance</td><td>0.01",
                "precision.test_images</td><td>–", "workers.stale_after_s</td><td>60.0",
                "budget.eta</td><td>3", "data.limit</td><td>–"):
        assert row in settings, row
    # the latency source as readable rows, not a raw dict
    assert "latency: released:raspberry-pi-3b+:torch</td><td>released, " in settings
    assert "latency: released:raspberry-pi-3b+:torch · device</td><td>Raspberry Pi 3B+" in settings
    assert "{&#x27;" not in settings and "{'" not in settings


def test_static_figures(small_store, tmp_path):
    with Store.open(str(small_store), create=False) as store:
        files = write_report(store, tmp_path / "r.html", static_dir=tmp_path / "fig")
    names = sorted(p.name for p in files.static)
    assert names == ["accuracy-latency.png", "accuracy-latency.svg", "accuracy-memory.png", "accuracy-memory.svg"]
    for path in files.static:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg")
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig", "r.html"]  # no temporary leftovers


def test_cli_report(cli, small_store, tmp_path):
    code, out, err = cli("report", str(small_store), "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    assert "model points" in " ".join(out.split())  # the console may wrap a long temporary path
    assert (tmp_path / "r.html").stat().st_size > 3_000_000  # plotly.js inside


def test_report_of_a_store_without_trained_models(cli, tmp_path):
    Store.open(str(tmp_path / "empty.db"), study_name="empty").close()
    code, _, err = cli("report", str(tmp_path / "empty.db"), "--out", str(tmp_path / "r.html"))
    assert code == 2 and "holds no trained model" in err
    assert not (tmp_path / "r.html").exists()
    code, _, err = cli("report", str(tmp_path / "nothing.db"), "--out", str(tmp_path / "r.html"))
    assert code == 2 and "no store" in err


def test_report_into_a_missing_folder(cli, small_store, tmp_path):
    code, _, err = cli("report", str(small_store), "--out", str(tmp_path / "no" / "r.html"))
    assert code == 2 and "does not exist" in err


def test_figures_replace_files_only_when_told(small_store, tmp_path):
    from iotnas.errors import ExportError

    figures, out = tmp_path / "fig", tmp_path / "r.html"
    figures.mkdir()
    (figures / "accuracy-latency.png").write_bytes(b"mine")
    with Store.open(str(small_store), read_only=True) as store:
        with pytest.raises(ExportError, match="figure .*accuracy-latency.png already exists.*--overwrite"):
            write_report(store, out, static_dir=figures)
        assert [p.name for p in figures.iterdir()] == ["accuracy-latency.png"] and not out.exists()
        assert (figures / "accuracy-latency.png").read_bytes() == b"mine"  # no figure written when one may not be
        files = write_report(store, out, static_dir=figures, overwrite=True)
        assert len(files.static) == 4 and (figures / "accuracy-latency.png").read_bytes()[:4] == b"\x89PNG"
        with pytest.raises(ExportError, match="is a file, not a folder"):
            write_report(store, tmp_path / "r2.html", static_dir=out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig", "r.html"]


@pytest.mark.slow
def test_full_released_study_in_a_real_browser(browser, released_dir, tmp_path):
    """All 1,617 released models (about 3 minutes to cost them) render and count right.

    Unconstrained, so that the tabular search answers for every model.
    """
    store = tabular_store(tmp_path, released_dir, name="full", laws=["all"], max_weight_bytes=None,
                          max_latency_ms=None)
    with Store.open(str(store), create=False) as s:
        assert len(study_points(s)) == 1617
    check_in_browser(browser, store, tmp_path / "report.html", ARTIFACTS / "report-full.png")
