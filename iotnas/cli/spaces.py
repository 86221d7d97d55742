"""`iotnas spaces list` and `iotnas spaces sample`: browse the search spaces, cost one model."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from iotnas.cli._common import console, print_json
from iotnas.cli.main import app
from iotnas.errors import ConfigError

spaces_app = typer.Typer(help="Browse the search spaces and cost a model.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")

#: Number formats reported by `spaces sample`: name -> bits per value.
FORMATS = {"float32": 32, "half": 16}
#: Version of the `spaces sample --json` schema (docs/spaces.md); bumped on incompatible change.
SAMPLE_SCHEMA = 1


@spaces_app.command("list")
def list_command(json_output: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the spaces, their laws and the ranges each law draws from (upper bounds exclusive)."""
    from iotnas.spaces import get_space, list_spaces

    spaces = [get_space(name) for name in list_spaces()]
    if json_output:
        print_json([
            {"space": s.name, "aliases": list(s.aliases), "summary": s.summary,
             "laws": {name: law.ranges() for name, law in s.laws.items()}}
            for s in spaces
        ])
        return
    table = Table(title="Search spaces (ranges [lo, hi) exclude hi)")
    for column in ("space", "law", "ranges"):
        table.add_column(column)
    for s in spaces:
        for i, (name, law) in enumerate(s.laws.items()):
            ranges = "\n".join(f"{k} {v}" for k, v in law.ranges().items())
            table.add_row(f"{s.name}\n[dim]{s.summary}[/dim]" if i == 0 else "", name, ranges,
                          end_section=i == len(s.laws) - 1)
    console.print(table)


@spaces_app.command(
    "sample",
    context_settings={"ignore_unknown_options": True},  # so a negative id reaches our own check
)
def sample_command(
    arch: list[str] = typer.Argument(
        ..., metavar="SPACE LAW ID | ARCH",
        help="A model: SPACE LAW ID (e.g. mobilenetv2 s4 39), 'space/law/id', or an Arch JSON object.",
    ),
    num_classes: int = typer.Option(10, "--num-classes", help="Classifier width."),
    in_channels: int = typer.Option(3, "--in-channels", help="Image channels (1 for MNIST-like data)."),
    json_output: bool = typer.Option(False, "--json", help="Print as JSON (schema in docs/spaces.md)."),
) -> None:
    """Print a model's sampled arguments, value count, MACs, FLOPs, weight and peak activation bytes."""
    from iotnas.arch import Arch, parse_id
    from iotnas.cost import cost

    if len(arch) == 3:
        parsed = Arch(arch[0], arch[1], parse_id(arch[2]))
    elif len(arch) == 1:
        parsed = Arch.parse(arch[0])
    else:
        raise ConfigError(
            f"expected SPACE LAW ID (e.g. 'mobilenetv2 s4 39') or one Arch, got {len(arch)} arguments: {' '.join(arch)}"
        )
    payload = sample_payload(parsed, cost(parsed, num_classes=num_classes, in_channels=in_channels),
                             num_classes=num_classes, in_channels=in_channels)
    if json_output:
        print_json(payload)
        return
    table = Table(title=payload["key"], show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("args", _compact(payload["args"]))
    table.add_row("n_values", f"{payload['n_values']:,}")
    table.add_row("MACs", f"{payload['macs']:,}")
    table.add_row("FLOPs", f"{payload['flops']:,}")
    for name, n in payload["weight_bytes"].items():
        table.add_row(f"weight bytes ({name})", f"{n:,}")
    for name, n in payload["peak_activation_bytes"].items():
        table.add_row(f"peak activation bytes ({name})", f"{n:,}")
    console.print(table)


def sample_payload(arch: Any, c: Any, *, num_classes: int, in_channels: int) -> dict[str, Any]:
    """The documented `spaces sample --json` object (docs/spaces.md)."""
    return {
        "schema": SAMPLE_SCHEMA,
        "key": arch.key,
        "space": arch.space,
        "law": arch.law,
        "id": arch.id,
        "args": arch.args,
        "num_classes": num_classes,
        "input_shape": [in_channels, 32, 32],
        "n_values": c.n_values,
        "macs": c.macs,
        "flops": c.flops,
        "weight_bytes": {name: c.weight_bytes(bits) for name, bits in FORMATS.items()},
        "peak_activation_bytes": {name: c.peak_activation_bytes(bits) for name, bits in FORMATS.items()},
    }


def _compact(args: Any) -> str:
    from iotnas.arch import canonical_json

    return canonical_json(args)
