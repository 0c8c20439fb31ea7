"""The ``voxelflow`` command line: one module per command, all on one Typer app.

Importing this package imports no torch (the commands import it when they run).
"""

from voxelflow.cli import (  # noqa: F401  (each module registers its command)
    convert,
    demo,
    index,
    infer,
    info,
)
from voxelflow.cli._app import app, main

__all__ = ["app", "main"]
