"""The report page: one self-contained HTML file (the plotting library's JS is embedded)."""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Any, Iterable, Sequence

import numpy as np
import plotly.offline

from iotnas.report._data import ReportData
from iotnas.report._figures import figures
from iotnas.report._style import family_color, human_bytes, human_count
from iotnas.results.points import ModelPoint
from iotnas.results.winners import WinnerRule, winners
from iotnas.study import Study

PLOT_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 1}}

CSS = """
:root { --fg:#1d232a; --muted:#5b6570; --line:#e3e7eb; --bg:#f5f7f9; --card:#fff; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { background:#14212b; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0; font-size:24px; font-weight:600; }
header p { margin:4px 0 0; color:#b8c4ce; }
main { max-width:1280px; margin:0 auto; padding:20px 24px 40px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(200px, 1fr)); gap:12px; margin-bottom:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:600; }
.card .sub { color:var(--muted); font-size:12px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px;
          margin-bottom:16px; }
section h2 { font-size:17px; margin:4px 0 8px; }
section p.note { color:var(--muted); margin:0 0 8px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; }
tr:hover td { background:#f0f5fa; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:50%; margin-right:6px; }
.bad { color:#b03a2e; }
.scroll { overflow:auto; max-height:440px; border:1px solid var(--line); border-radius:6px; }
th { position:sticky; top:0; background:#fff; z-index:1; }
section.meta .scroll { max-height:none; border:none; }
details summary { cursor:pointer; color:var(--accent); }
pre { background:#f7f7f7; padding:10px; border-radius:6px; overflow-x:auto; font-size:12px; }
.kv td:first-child { color:var(--muted); width:220px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: set[int] = frozenset(),
           table_id: str | None = None) -> str:
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    attr = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _family_cell(space: str) -> str:
    color = family_color(space)
    return f'<span class="swatch" style="background:{color}"></span>{_e(space)}'


def _latency_cell(p: ModelPoint) -> str:
    """The latency, marked "(pred.)" when a predictor gave it rather than the device."""
    if p.latency_ms is None:
        return "–"
    if p.latency_source == "predicted":
        return f'<span title="predicted, not measured">{p.latency_ms:.4g} (pred.)</span>'
    return f'<span title="{_e(p.latency_source or "measured")}">{p.latency_ms:.4g}</span>'


def _front_table(points: Sequence[ModelPoint], mask: np.ndarray, table_id: str) -> str:
    chosen = sorted((points[i] for i in np.flatnonzero(mask)), key=lambda p: (-p.accuracy, p.weight_bytes, p.key))
    rows = [
        (
            _e(p.key), _family_cell(p.space), _e(p.format_name), _accuracy_cell(p),
            f'<span title="{p.weight_bytes:,} bytes">{human_bytes(p.weight_bytes)}</span>',
            _latency_cell(p),
            human_count(p.n_values), human_count(p.macs), human_bytes(p.peak_activation_bytes), f"{p.epochs:g}",
            "yes" if p.feasible else f'<span class="bad" title="{_e(p.reason)}">no</span>',
        )
        for p in chosen
    ]
    headers = ("Model", "Family", "Format", "Accuracy", "Weights", "Latency (ms)", "Values", "MACs",
               "Peak activations", "Epochs", "Feasible")
    return _table(headers, rows, numeric={3, 4, 5, 6, 7, 8, 9}, table_id=table_id)


def _accuracy_cell(p: ModelPoint) -> str:
    """The accuracy ranked by, and the whole test split's where the point was re-scored on it."""
    if p.full_accuracy is not None:
        return f'<span title="{p.accuracy:.2%} on {p.test_images:,} test images">{p.full_accuracy:.2%}</span>'
    if p.test_images is not None:
        return f'<span title="on {p.test_images:,} test images">{p.accuracy:.2%}*</span>'
    return f"{p.accuracy:.2%}"


def _cards(data: ReportData) -> str:
    rule = WinnerRule.of(data.study)
    ranked = winners(data.points, rule=rule)
    best = ranked[0] if ranked else None
    limits = []
    if data.limits.max_weight_bytes is not None:
        limits.append(f"weights ≤ {human_bytes(data.limits.max_weight_bytes)}")
    if data.limits.max_latency_ms is not None:
        limits.append(f"latency ≤ {data.limits.max_latency_ms:g} ms")
    if data.limits.max_activation_bytes is not None:
        limits.append(f"activations ≤ {human_bytes(data.limits.max_activation_bytes)}")
    trained = len({p.key for p in data.points})
    cards = [
        ("Winner", f"{best.reported_accuracy:.2%}" if best else "none",
         f"{best.key} · {best.format_name} · {human_bytes(best.weight_bytes)} ({_rule_text(rule)})" if best
         else "no model meets the limits"),
        ("Models trained", f"{trained:,}", f"{len(data.points):,} model × format points"),
        ("Candidates", f"{sum(data.counts.values()):,}",
         ", ".join(f"{n:,} {s}" for s, n in sorted(data.counts.items()))),
        ("Constraints", str(len(limits)) if limits else "none", "; ".join(limits) or "unconstrained"),
        ("Formats", str(len(data.formats)), ", ".join(data.formats)),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{_e(a)}</div><div class="value">{_e(b)}</div>'
        f'<div class="sub">{_e(c)}</div></div>'
        for a, b, c in cards
    ) + "</div>"


def _rule_text(rule: WinnerRule) -> str:
    if rule.pick == "most_accurate":
        return "most accurate"
    return f"fewest bytes within {rule.tolerance:.1%} of the most accurate"


def _settings(data: ReportData) -> str:
    """Every setting of the study, defaults included, one row each; then each latency source, one row per figure."""
    study = data.study.to_dict() if data.study is not None else {}
    rows = [(key, _plain(value)) for key, value in _flat(_every_setting(data.study)) if key != "name"]
    for device, info in sorted(data.devices.items()):
        counts = sorted(info["sources"].items())
        split = f" ({', '.join(f'{source} {n:,}' for source, n in counts)})" if len(counts) > 1 else ""
        rows.append((f"latency: {device}", f"{', '.join(s for s, _ in counts)}, {info['models']:,} models{split}"))
        rows += [(f"latency: {device} · {key}", _plain(value)) for key, value in _flat(info["detail"])]
    kv = _table(("Setting", "Value"), [(_e(k), _e(v)) for k, v in rows])
    raw = _e(json.dumps(study, indent=2, sort_keys=True, default=str))
    return kv.replace("<table>", '<table class="kv">') + f"<details><summary>the study as stored</summary><pre>{raw}</pre></details>"


def _every_setting(study: Study | None) -> dict[str, Any]:
    """The study's tables as :meth:`Study.to_dict` writes them, with the unset keys too (shown as "–")."""
    if study is None:
        return {}
    full = dataclasses.asdict(study)
    full.pop("base_dir")
    full["space"] = {"laws": full.pop("laws"), "pool_per_law": full.pop("pool_per_law")}
    return {key: full[key] for key in study.to_dict()} | {k: v for k, v in full.items() if k not in study.to_dict()}


def _flat(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested table as (dotted key, value) rows, in the study file's order; an empty table is one row."""
    rows: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) and value:
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return "(none)" if not value else ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _skipped(data: ReportData) -> str:
    """The formats the precision stage did not evaluate, and why: never silently missing."""
    if not data.skipped:
        return ""
    rows = [(_e(s.arch_key), _e(s.format_name), f"{s.epochs:g}", _e(s.reason)) for s in data.skipped]
    return ('<section><h2>Formats not evaluated</h2><p class="note">Grid formats skipped before any evaluation: '
            "their range cannot hold the model's weights, or a wider format already collapsed.</p>"
            + _table(("Model", "Format", "Epochs", "Why"), rows, numeric={2}, table_id="skipped") + "</section>")


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document that opens offline."""
    plots = []
    for stem, fig in figures(data).items():
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG, div_id=f"plot-{stem}",
                          default_width="100%")
        plots.append(f'<section class="plot">{div}</section>')
    tables = [
        ("front-latency", "Feasible front: accuracy vs latency", data.fronts["latency_ms"].feasible),
        ("front-memory", "Feasible front: accuracy vs weight memory", data.fronts["weight_bytes"].feasible),
        ("front-3d", "Feasible front in three objectives: accuracy, weight memory and latency", data.front_3d),
    ]
    table_html = "".join(
        f'<section><h2>{_e(title)}</h2><p class="note">{int(mask.sum())} models no feasible model beats on '
        f"every objective at once, most accurate first.</p>{_front_table(data.points, mask, tid)}</section>"
        for tid, title, mask in tables
        if mask.any() or tid != "front-3d"
    )
    provenance = _table(("", ""), [(_e(k), _e(v)) for k, v in data.provenance.items()]).replace(
        "<table>", '<table class="kv">')
    subtitle = (f"{len({p.key for p in data.points}):,} trained models · "
                f"{', '.join(data.families)} · made {data.provenance.get('Report made', '')}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>iotnas report · {_e(data.study_name)}</title>
<style>{CSS}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header><h1>iotnas report · {_e(data.study_name)}</h1><p>{_e(subtitle)}</p></header>
<main>
{_cards(data)}
{''.join(plots)}
{table_html}
{_skipped(data)}
<section class="meta"><h2>Study settings</h2>{_settings(data)}</section>
<section class="meta"><h2>Provenance</h2>{provenance}</section>
</main>
</body>
</html>
"""
