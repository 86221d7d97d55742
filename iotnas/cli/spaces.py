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


#: Weight budgets `spaces list` counts models under, in KiB, and the widths it counts them at.
LIST_BUDGETS_KIB = (4, 8, 16, 32, 64, 128)
LIST_FORMATS = {"float32": 32, "half": 16, "8-bit": 8}  # 8-bit: int8 and the 8-bit floats alike
KIB = 1024


@spaces_app.command("list")
def list_command(json_output: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the spaces, their laws, the ranges each law draws from (upper bounds exclusive) and what
    each law yields: value counts and how many of its first ids fit each weight budget per format."""
    from iotnas.spaces import get_space, list_spaces
    from iotnas.spaces.yields import YIELD_IDS, law_yield

    spaces = [get_space(name) for name in list_spaces()]
    yields = {(s.name, law): _yield_payload(law_yield(s.name, law)) for s in spaces for law in s.laws}
    if json_output:
        print_json([
            {"space": s.name, "aliases": list(s.aliases), "summary": s.summary,
             "laws": {name: law.ranges() for name, law in s.laws.items()},
             "yields": {name: yields[s.name, name] for name in s.laws}}
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
    console.print(_yields_table(spaces, yields, YIELD_IDS))


def _yields_table(spaces: list[Any], yields: dict[tuple[str, str], dict[str, Any]], n_ids: int) -> Table:
    """One row per law and format: value counts, and how many sampled ids fit each budget."""
    budgets = " ".join(f"{kib:>3}" for kib in LIST_BUDGETS_KIB)
    table = Table(title=f"What each law yields (ids 0-{n_ids - 1}; k = 1,000 values, M = 1,000,000)")
    table.add_column("law")
    table.add_column("values\nmin / median / max", justify="right")
    table.add_column("format")
    table.add_column(f"ids within KiB\n{budgets}", justify="right", no_wrap=True)
    for s in spaces:
        for name in s.laws:
            y = yields[s.name, name]
            values = "cannot run" if y["n_values"] is None else " / ".join(_short(v) for v in y["n_values"].values())
            for j, (fmt, counts) in enumerate(y["within_kib"].items()):
                last = j == len(y["within_kib"]) - 1
                table.add_row(f"{s.name}/{name}" if j == 0 else "", values if j == 0 else "", fmt,
                              " ".join(f"{n:>3}" for n in counts.values()), end_section=last)
    return table


def _short(n: int) -> str:
    """A value count in at most 5 characters: exact below 10,000, else in k or M."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.1f}k" if n < 100_000 else f"{n / 1e3:.0f}k"
    return f"{n / 1e6:.1f}M" if n < 100_000_000 else f"{n / 1e6:.0f}M"


def _yield_payload(y: Any) -> dict[str, Any]:
    """A law's yields as `spaces list --json` prints them (docs/spaces.md)."""
    from iotnas.results.limits import Limits

    summary = y.values_summary()
    return {
        "ids": len(y.figures),
        "runnable": sum(f is not None for f in y.figures),
        "n_values": None if summary is None else dict(zip(("min", "median", "max"), summary)),
        "within_kib": {
            fmt: {str(kib): y.count_within(Limits(max_weight_bytes=kib * KIB), bits=bits) for kib in LIST_BUDGETS_KIB}
            for fmt, bits in LIST_FORMATS.items()
        },
    }


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
