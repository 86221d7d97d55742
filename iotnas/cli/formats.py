"""`iotnas formats list | show | round`: inspect number formats and try their rounding."""

from __future__ import annotations

import math

import torch
import typer
from rich.table import Table

from iotnas.cli._common import console, print_json
from iotnas.cli.main import app
from iotnas.errors import ConfigError
from iotnas.formats import NAMED_FORMATS, FloatFormat, IntFormat, NumberFormat, format_names, parse_format

formats_app = typer.Typer(
    help="Number formats: list them, show their ranges, round numbers with them.",
    no_args_is_help=True,
)
app.add_typer(formats_app, name="formats")


def _json_number(value: float) -> float | str:
    """JSON has no infinities or NaN: those become the strings "inf", "-inf", "nan"."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def describe(fmt: NumberFormat) -> dict[str, object]:
    """What ``show`` prints: the format's layout and range."""
    info: dict[str, object] = {"name": fmt.name, "bits": fmt.bits}
    if isinstance(fmt, FloatFormat):
        info.update(
            kind="float",
            exp_bits=fmt.exp_bits,
            man_bits=fmt.man_bits,
            bias=fmt.bias,
            max=fmt.max_value,
            min_normal=fmt.min_normal,
            min_subnormal=fmt.min_subnormal,
            epsilon=fmt.epsilon,
            infinities=fmt.has_inf,
            nan=fmt.has_nan,
            overflow=fmt.overflow,
        )
    elif isinstance(fmt, IntFormat):
        info.update(kind="int", max_code=fmt.qmax, scale_format=fmt.scale_format, scale_per="output channel")
    return info


@formats_app.command("list")
def list_formats(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the named formats (any eXmY, eXmYfn and intB work too)."""
    rows = [describe(fmt) for fmt in NAMED_FORMATS.values()]
    aliases = {name: [a for a in format_names() if a not in NAMED_FORMATS and parse_format(a) == fmt]
               for name, fmt in NAMED_FORMATS.items()}
    for row, name in zip(rows, NAMED_FORMATS):
        row["aliases"] = aliases[name]
    if json_output:
        print_json([{k: _json_number(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
        return
    table = Table("name", "bits", "layout", "max", "min subnormal", "aliases")
    for row in rows:
        layout = (
            f"1+{row['exp_bits']}+{row['man_bits']}" + (" finite" if not row["infinities"] else "")
            if row["kind"] == "float"
            else f"int, {row['scale_format']} scales"
        )
        table.add_row(
            str(row["name"]), str(row["bits"]), layout,
            f"{row['max']:.6g}" if "max" in row else "",
            f"{row['min_subnormal']:.6g}" if "min_subnormal" in row else "",
            ", ".join(row["aliases"]),
        )
    console.print(table)


@formats_app.command("show")
def show(
    name: str = typer.Argument(..., help="Format name, e.g. e5m10, bfloat16, e4m3fn, int8."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a format's bits, bias and range."""
    info = describe(parse_format(name))
    if json_output:
        print_json({k: _json_number(v) if isinstance(v, float) else v for k, v in info.items()})
        return
    for key, value in info.items():
        console.print(f"{key:>14}  {value!r}" if isinstance(value, float) else f"{key:>14}  {value}")


def _parse_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"not a number: {text!r}; give decimal numbers such as 0.1, -3e5, inf or nan") from None


@formats_app.command(
    "round", context_settings={"ignore_unknown_options": True}  # lets negative numbers through
)
def round_values(
    name: str = typer.Argument(..., help="Format name, e.g. e4m3."),
    values: list[str] = typer.Argument(..., help="Numbers to round (negative ones welcome)."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list of the rounded values."),
) -> None:
    """Round numbers to a format, nearest with ties to even (an int format scales them together)."""
    fmt = parse_format(name)
    numbers = [_parse_value(v) for v in values]
    rounded = fmt.round(torch.tensor(numbers, dtype=torch.float64)).tolist()
    if json_output:
        print_json([_json_number(v) for v in rounded])
        return
    for text, value in zip(values, rounded):
        console.print(f"{text} -> {value!r}")
