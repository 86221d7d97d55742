"""Entry point: the Typer app, its sub-commands, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
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


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that files are closed and stores committed on the way out."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
INTERRUPTED = "iotnas: interrupted; what was finished is kept: run the same command again to resume\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; turn every user mistake into one stderr line and exit code 2."""
    _register_subcommands()
    command = typer.main.get_command(app)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = command.main(args=argv, prog_name="iotnas", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # Typer returns Ctrl-C as this exit code, without a word
            sys.stderr.write(INTERRUPTED)
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
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write(INTERRUPTED)
        return EXIT_INTERRUPTED
    except _Terminated:
        sys.stderr.write(INTERRUPTED)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0) if isinstance(result, int) else 0


def run() -> None:  # pragma: no cover - thin wrapper for `python -m iotnas`
    sys.exit(main())
