"""Shared pieces of the CLI: consoles, JSON output, the options several commands share."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

#: Commands that read a study take its store, or the study file that names the store.
STORE = typer.Argument(..., metavar="STORE", help="The study's store (SQLite file or SQLAlchemy URL), or its "
                       "study file (.toml).")

#: Commands that read a store name the study to read where the store holds several.
STUDY = typer.Option(None, "--study", help="The study to read, where the store holds several ('iotnas studies STORE').")


def print_json(payload: Any) -> None:
    """Write ``payload`` as JSON to stdout, uncoloured, so other tools can parse it."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
