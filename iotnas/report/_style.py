"""Colours, markers and number formatting shared by the interactive and the static figures."""

from __future__ import annotations

import functools
import itertools

# Okabe-Ito, distinguishable with colour-vision deficiencies. Families take them in registration
# order, so a family keeps its colour from one report to the next; an eighth family starts over.
PALETTE = ("#0072B2", "#009E73", "#E69F00", "#CC79A7", "#D55E00", "#56B4E9", "#7F6A00")
OTHER_COLOR = "#666666"

# Marker per number format, in order of appearance (widest format first): plotly and matplotlib names.
PLOTLY_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "cross", "star", "pentagon", "hexagon")
MPL_MARKERS = ("o", "D", "s", "^", "X", "P", "*", "p", "h")

FRONT_COLOR = "#222222"
LIMIT_COLOR = "#C0392B"


@functools.cache
def family_colors() -> dict[str, str]:
    """Registered family -> colour. Built on first use: the space registry comes with torch."""
    from iotnas.spaces import list_spaces

    return dict(zip(list_spaces(), itertools.cycle(PALETTE)))


def family_color(space: str) -> str:
    return family_colors().get(space, OTHER_COLOR)


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
