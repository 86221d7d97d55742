"""Entry point: the Typer app, its sub-commands, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from iotnas import __version__
from iotnas.errors import IotnasError

app = typer.Typer(
    name="iotnas",
    help="Design image-classification CNNs that fit an IoT device's memory and latency limits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USAGE = 2


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"iotnas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library messages to stderr."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register_subcommands() -> None:
    """Attach each command group; each lives in its own module under ``iotnas.cli``."""
    from iotnas.cli import commands  # noqa: F401  (registers on import)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; turn every user mistake into one stderr line and exit code 2."""
    _register_subcommands()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="iotnas", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown command, bad option value, ...
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was already printed
            return 0
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"iotnas: error: {message}{hint}\n")
        return EXIT_USAGE
    except IotnasError as exc:
        sys.stderr.write(f"iotnas: error: {exc}\n")
        return EXIT_USAGE
    except typer.Abort:
        sys.stderr.write("iotnas: interrupted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("iotnas: interrupted\n")
        return 130
    return int(result or 0) if isinstance(result, int) else 0


def run() -> None:  # pragma: no cover - thin wrapper for `python -m iotnas`
    sys.exit(main())
