"""Validation helpers for explicit (user-given) arguments; sampled ones pass by construction."""

from __future__ import annotations

from typing import Any

from iotnas.errors import ArchError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_dict(space: str, args: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """``args`` as a dict with exactly ``keys``."""
    if not isinstance(args, dict):
        raise ArchError(f"arguments for space '{space}' must be an object with keys {list(keys)}, got {args!r}")
    if set(args) != set(keys):
        raise ArchError(
            f"arguments for space '{space}' must have exactly the keys {sorted(keys)}, got {sorted(map(str, args))}"
        )
    return args


def int_list(space: str, value: Any, what: str, n: int, *, minimum: int = 1) -> list[int]:
    """``value`` as a list of ``n`` ints, each at least ``minimum``."""
    if not isinstance(value, list) or len(value) != n or not all(_is_int(v) and v >= minimum for v in value):
        raise ArchError(
            f"'{what}' of space '{space}' must be a list of {n} integers >= {minimum}, got {value!r}"
        )
    return value


def int_value(space: str, value: Any, what: str, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise ArchError(f"'{what}' of space '{space}' must be an integer >= {minimum}, got {value!r}")
    return value
