"""Shared pieces of the CLI: consoles and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Write ``payload`` as JSON to stdout, uncoloured, so other tools can parse it."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
