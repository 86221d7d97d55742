"""Colours, markers and number formatting shared by the interactive and the static figures."""

from __future__ import annotations

# Okabe-Ito, distinguishable with colour-vision deficiencies; one per family, fixed so that a
# family keeps its colour from one report to the next.
FAMILY_COLORS: dict[str, str] = {
    "densenet": "#0072B2",
    "googlenet": "#009E73",
    "mobilenetv2": "#E69F00",
    "pnasnet": "#CC79A7",
    "resnext": "#D55E00",
    "resnet": "#56B4E9",
    "probenet": "#7F6A00",
}
OTHER_COLOR = "#666666"

# Marker per number format, in order of appearance (widest format first): plotly and matplotlib names.
PLOTLY_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "cross", "star", "pentagon", "hexagon")
MPL_MARKERS = ("o", "D", "s", "^", "X", "P", "*", "p", "h")

FRONT_COLOR = "#222222"
LIMIT_COLOR = "#C0392B"


def family_color(space: str) -> str:
    return FAMILY_COLORS.get(space, OTHER_COLOR)


def human_bytes(n: float) -> str:
    """``32768`` -> ``"32.0 KiB"``."""
    for unit in ("bytes", "KiB", "MiB"):
        if abs(n) < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.4g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    """``1234567`` -> ``"1.23 M"``."""
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"
