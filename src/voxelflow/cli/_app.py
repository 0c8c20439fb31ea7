"""The ``voxelflow`` Typer application that every command module registers on."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from voxelflow._errors import VoxelflowError

app = typer.Typer(
    name="voxelflow",
    help="Lazy 3-D medical images, patch-based training and inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_ERROR = 1  # the input was wrong (missing file, bad header, bad option)
EXIT_USAGE = 2  # the command line was wrong (Typer/Click's own code)


def fail(error: BaseException) -> NoReturn:
    """Print a voxelflow error on stderr and exit with :data:`EXIT_ERROR`."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(EXIT_ERROR)


def run_guarded(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call ``function``; library errors become one line on stderr and exit code 1."""
    try:
        return function(*args, **kwargs)
    except (VoxelflowError, OSError) as error:
        fail(error)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _version(value: bool) -> None:
    if value:
        from voxelflow import __version__

        typer.echo(f"voxelflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Lazy 3-D medical images, patch-based training and inference.

    Exit codes: 0 success, 1 bad input (the message says which file and why), 2 bad usage.
    """
