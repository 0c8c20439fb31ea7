"""The ``voxelflow`` command line: one module per command, all on one Typer app."""

from voxelflow.cli import convert  # noqa: F401  (registers the command)
from voxelflow.cli import demo, infer, info  # noqa: F401  (each module registers its command)
from voxelflow.cli import index  # noqa: F401  (registers the command)
from voxelflow.cli._app import app


def main() -> None:
    """Entry point of the ``voxelflow`` console script."""
    app()


__all__ = ["app", "main"]
