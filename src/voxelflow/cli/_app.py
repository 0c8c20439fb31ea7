"""The ``voxelflow`` Typer application that every command module registers on.

Errors reach the user as one line on stderr and an exit code scripts can rely
on; a traceback only with ``--debug``. This module imports no torch: the
commands import what they need when they run, so ``--version`` and ``--help``
start in a fraction of a second.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer

from voxelflow._errors import VoxelflowError

app = typer.Typer(
    name="voxelflow",
    help="Lazy 3-D medical images, patch-based training and inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click messages: "Error: ..." lines scripts can read
)

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_ERROR = 1  # the input was wrong (missing file, bad header, a model that does not fit)
EXIT_USAGE = 2  # the command line was wrong (unknown option, missing argument, value out of range)
EXIT_INTERRUPTED = 130

#: The built-in storage backends (``voxelflow.backends.backends()``), for ``--backend``'s help
#: without importing them (tests/cli checks that the two agree).
BUILTIN_BACKENDS = (
    "nifti",
    "nifti-gz",
    "nifti-zarr",
    "nifti-remote",
    "nifti-gz-remote",
    "simpleitk",
)
BACKEND_HELP = (
    "Read the input with this storage backend instead of the one its name selects, e.g. "
    "simpleitk for an Analyze .hdr/.img pair. Registered: " + ", ".join(BUILTIN_BACKENDS) + "."
)

#: ``--debug`` was given: let errors propagate with their traceback.
_DEBUG = {"on": False}

T = TypeVar("T")


def debug_enabled() -> bool:
    """Whether ``--debug`` was given on this command line."""
    return _DEBUG["on"]


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def error_line(error: BaseException) -> str:
    """What the user sees for ``error``: the library's message, or a pointer to ``--debug``."""
    if isinstance(error, VoxelflowError | OSError):
        # The library names its keyword (backend='simpleitk'); here it is an option.
        return "error: " + re.sub(r"\bbackend='([\w.-]+)'", r"--backend \1", one_line(error))
    return (
        f"error: unexpected {type(error).__name__}: {one_line(error)} "
        "(rerun with --debug for the traceback, and report it if the input looks valid)"
    )


def fail(error: BaseException) -> NoReturn:
    """Print ``error`` as one line on stderr and exit with :data:`EXIT_ERROR`."""
    typer.echo(error_line(error), err=True)
    raise typer.Exit(EXIT_ERROR)


def run_guarded(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``function``; any error becomes one line on stderr and exit code 1.

    Typer's and Click's own exits (usage errors, ``--help``) pass through. With
    ``--debug`` the error propagates with its traceback.
    """
    try:
        return function(*args, **kwargs)
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as error:
        if debug_enabled():
            raise
        fail(error)


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
    debug: bool = typer.Option(
        False, "--debug", help="Show the full Python traceback of an error (for bug reports)."
    ),
) -> None:
    """Lazy 3-D medical images, patch-based training and inference.

    Exit codes: 0 success; 1 bad input (one line on stderr names the file, what
    was wrong and the fix); 2 bad usage (unknown option, missing argument, a
    value out of its range); 130 interrupted. Add --debug before the command
    for a traceback.
    """
    _DEBUG["on"] = debug


def main() -> None:
    """Entry point of the ``voxelflow`` script and of ``python -m voxelflow``."""
    _DEBUG["on"] = False
    try:
        app()
    except Exception as error:  # escaped a command's guard: still one line, exit 1
        if debug_enabled():
            raise
        typer.echo(error_line(error), err=True)
        sys.exit(EXIT_ERROR)
