"""Static PNG and SVG figures (Matplotlib) of the same trade-offs, for papers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iotnas.report._data import PLOTS, ReportData
from iotnas.report._style import FRONT_COLOR, LIMIT_COLOR, MPL_MARKERS, family_color, human_bytes

FIGSIZE = (6.4, 4.2)  # inches: one column of a two-column paper at 2x
DPI = 200


def write_static(data: ReportData, folder: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` for each plot into ``folder``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    markers = {f: MPL_MARKERS[i % len(MPL_MARKERS)] for i, f in enumerate(data.formats)}
    written = []
    for x, title, stem in PLOTS:
        usable = [p for p in data.points if not np.isnan(p.value(x))]
        if not usable:
            continue
        fig = Figure(figsize=FIGSIZE, layout="constrained")
        ax = fig.add_subplot()
        for family in data.families:
            for fmt in data.formats:
                group = [p for p in usable if p.space == family and p.format_name == fmt]
                if not group:
                    continue
                colors = [(*matplotlib.colors.to_rgb(family_color(family)), 0.85 if p.feasible else 0.2)
                          for p in group]
                label = f"{family} · {fmt}" if len(data.formats) > 1 else family
                ax.scatter([p.value(x) for p in group], [p.accuracy for p in group], s=14, c=colors,
                           marker=markers[fmt], linewidths=0)
                # Legend entry at full colour, whatever the feasibility of the first model.
                ax.plot([], [], linestyle="", marker=markers[fmt], markersize=4, color=family_color(family),
                        markeredgewidth=0, label=label)
        mask = data.fronts[x].feasible
        front = sorted((data.points[i] for i in np.flatnonzero(mask)), key=lambda p: (p.value(x), p.accuracy))
        if front:
            ax.step([p.value(x) for p in front], [p.accuracy for p in front], where="post", color=FRONT_COLOR,
                    linewidth=1.2, label="feasible front")
            ax.scatter([p.value(x) for p in front], [p.accuracy for p in front], s=40, facecolors="none",
                       edgecolors=FRONT_COLOR, linewidths=1.0)
        limit = data.limits.max_latency_ms if x == "latency_ms" else data.limits.max_weight_bytes
        if limit is not None:
            text = f"limit {limit:g} ms" if x == "latency_ms" else f"limit {human_bytes(limit)}"
            ax.axvline(limit, color=LIMIT_COLOR, linestyle="--", linewidth=1.2, label=text)
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("Test accuracy")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.grid(True, which="major", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(fontsize=7, frameon=False, loc="lower right", markerscale=1.5)
        for suffix in ("png", "svg"):
            path = folder / f"{stem}.{suffix}"
            fig.savefig(path, dpi=DPI, metadata={"Date": None} if suffix == "svg" else None)
            written.append(path)
    return written
