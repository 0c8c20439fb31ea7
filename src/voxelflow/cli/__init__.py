"""The ``voxelflow`` command line: one module per command, all on one Typer app."""

from voxelflow.cli import (  # noqa: F401  (each module registers its command)
    convert,  # noqa: F401  (registers the command)
    demo,
    index,  # noqa: F401  (registers the command)
    infer,
    info,
)
from voxelflow.cli._app import app


def main() -> None:
    """Entry point of the ``voxelflow`` console script."""
    app()


__all__ = ["app", "main"]
