"""The interactive trade-off plots (plotly): every model, the fronts, and the limits."""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from iotnas.results.points import ModelPoint
from iotnas.report._data import PLOTS, ReportData
from iotnas.report._style import FRONT_COLOR, LIMIT_COLOR, PLOTLY_SYMBOLS, family_color, human_bytes, human_count

#: Above this many markers a plot uses WebGL (scattergl); below it SVG, which needs no GPU.
GL_THRESHOLD = 5000
FEASIBLE_OPACITY = 0.85
INFEASIBLE_OPACITY = 0.22


def hover_text(p: ModelPoint) -> str:
    """Every figure of a model in one format, for the hover box."""
    latency = "not timed" if p.latency_ms is None else f"{p.latency_ms:.4g} ms"
    status = "feasible" if p.feasible else f"infeasible: {p.reason}"
    if p.chance_level:
        status += " · chance level (never on a front)"
    return "<br>".join([
        f"<b>{html.escape(p.key)}</b>",
        f"space {html.escape(p.space)} · law {html.escape(str(p.law))} · id {p.arch_id}",
        f"format {html.escape(p.format_name)} ({p.bits} bits){' fine-tuned' if p.finetuned else ''}",
        f"accuracy {p.accuracy:.2%} after {p.epochs:g} epochs"
        + ("" if p.test_images is None else f" (on {p.test_images:,} test images)")
        + ("" if p.full_accuracy is None else f", {p.full_accuracy:.2%} on all"),
        f"weights {human_bytes(p.weight_bytes)} ({p.weight_bytes:,} bytes)",
        f"latency {latency}",
        f"{p.n_values:,} values · {human_count(p.macs)} MACs · {human_count(p.flops)} FLOPs",
        f"peak activations {human_bytes(p.peak_activation_bytes)}",
        status,
    ])


def _staircase(points: Sequence[ModelPoint], mask: np.ndarray, x: str) -> tuple[list[float], list[float], list[str]]:
    """Front points ordered by the x objective (then accuracy), ready to draw as a step line."""
    chosen = sorted((points[i] for i in np.flatnonzero(mask)), key=lambda p: (p.value(x), p.accuracy))
    return [p.value(x) for p in chosen], [p.accuracy for p in chosen], [hover_text(p) for p in chosen]


def trade_off_figure(data: ReportData, x: str, title: str) -> go.Figure:
    """Accuracy against ``x`` (latency or weight bytes) for every model with that figure."""
    usable = [p for p in data.points if not np.isnan(p.value(x))]
    scatter = go.Scattergl if len(usable) > GL_THRESHOLD else go.Scatter
    fig = go.Figure()
    symbols = {f: PLOTLY_SYMBOLS[i % len(PLOTLY_SYMBOLS)] for i, f in enumerate(data.formats)}
    multi_format = len(data.formats) > 1
    for family in data.families:
        for fmt in data.formats:
            group = [p for p in usable if p.space == family and p.format_name == fmt]
            name = f"{family} · {fmt}" if multi_format else family
            # Infeasible models in a faded twin trace that shares the legend entry.
            for feasible in (True, False):
                part = [p for p in group if p.feasible == feasible]
                if not part:
                    continue
                fig.add_trace(scatter(
                    x=[p.value(x) for p in part], y=[p.accuracy for p in part], mode="markers",
                    name=name, legendgroup=name, showlegend=feasible or all(not p.feasible for p in group),
                    text=[hover_text(p) for p in part], hovertemplate="%{text}<extra></extra>",
                    marker=dict(color=family_color(family), symbol=symbols[fmt], size=7,
                                opacity=FEASIBLE_OPACITY if feasible else INFEASIBLE_OPACITY,
                                line=dict(width=0.5, color="white")),
                    meta={"role": "models", "family": family, "format": fmt, "feasible": feasible},
                ))
    fronts = data.fronts[x]
    lines = [("Pareto front, all models", fronts.all, dict(color="#888888", width=1.5, dash="dot"), True)]
    if multi_format:
        lines += [
            (f"front · {fmt}", fronts.per_format & np.array([p.format_name == fmt for p in data.points]),
             dict(color="#888888", width=1, dash="dash"), "legendonly")
            for fmt in data.formats
        ]
    lines.append(("Pareto front, feasible", fronts.feasible, dict(color=FRONT_COLOR, width=2), True))
    for name, mask, line, visible in lines:
        xs, ys, texts = _staircase(data.points, mask, x)
        if not xs:
            continue
        feasible = name.endswith("feasible")
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers" if feasible else "lines", name=name, line_shape="hv", line=line,
            visible=visible, text=texts, hovertemplate="%{text}<extra>front</extra>",
            marker=dict(symbol="circle-open", size=13, color=FRONT_COLOR, line=dict(width=2)),
            meta={"role": "front", "front": name},
        ))
    limit = data.limits.max_latency_ms if x == "latency_ms" else data.limits.max_weight_bytes
    if limit is not None:
        label = f"limit {limit:g} ms" if x == "latency_ms" else f"limit {human_bytes(limit)}"
        fig.add_vline(x=limit, line=dict(color=LIMIT_COLOR, width=2, dash="dash"))
        # Annotations on a log axis take log10 of the position (shapes take the value itself).
        fig.add_annotation(x=np.log10(limit), xref="x", y=1, yref="paper", text=label, showarrow=False,
                           xanchor="center", yanchor="bottom", font=dict(color=LIMIT_COLOR))
        fig.add_vrect(x0=limit, x1=max([p.value(x) for p in usable] + [limit]) * 10, fillcolor=LIMIT_COLOR,
                      opacity=0.05, line_width=0, layer="below")
    fig.update_layout(
        template="plotly_white", height=560, margin=dict(l=70, r=20, t=50, b=60),
        title=dict(text=f"Accuracy vs {title.split(' (')[0].lower()}", x=0.01, font=dict(size=18)),
        hovermode="closest", hoverlabel=dict(align="left", bgcolor="white", font=dict(size=12)),
        legend=dict(title=dict(text="family" + (" · format" if multi_format else "")), itemsizing="constant"),
        font=dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13),
    )
    values = [p.value(x) for p in usable] + ([limit] if limit is not None else [])
    lo, hi = max(min(values), 1e-9), max(values)
    tickvals = _byte_ticks(lo, hi) if x == "weight_bytes" else _log_ticks(lo, hi)
    fig.update_xaxes(type="log", title=title, range=[np.log10(lo) - 0.08, np.log10(hi) + 0.08], tickvals=tickvals,
                     ticktext=[human_bytes(v) if x == "weight_bytes" else f"{v:g}" for v in tickvals],
                     showline=True, linecolor="#bbbbbb", gridcolor="#eeeeee")
    fig.update_yaxes(title="Test accuracy", tickformat=".0%", showline=True, linecolor="#bbbbbb",
                     gridcolor="#eeeeee")
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 times the powers of ten that cover [lo, hi] (about 3 labels per decade)."""
    first, last = int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1
    return [m * 10.0 ** e for e in range(first, last + 1) for m in (1, 2, 5)]


def _byte_ticks(lo: float, hi: float) -> list[float]:
    """Powers of two covering [lo, hi], every one up to ~10 octaves, fewer for wider spans."""
    first, last = int(np.floor(np.log2(lo))), int(np.ceil(np.log2(hi)))
    step = max(1, -(-(last - first) // 10))
    return [2.0 ** e for e in range(first - first % step, last + 1, step)]


def figures(data: ReportData) -> dict[str, go.Figure]:
    """File stem -> figure, for every plot whose x figure some model has."""
    out = {}
    for x, title, stem in PLOTS:
        if any(not np.isnan(p.value(x)) for p in data.points):
            out[stem] = trade_off_figure(data, x, title)
    return out
