"""``voxelflow info``: what a volume is, from its header only."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import typer

from voxelflow.cli._app import app, run_guarded


def describe(source: str) -> dict[str, Any]:
    """Header facts about ``source`` (reads no voxel data)."""
    from voxelflow.image import Image, _pretty_bytes

    image = Image(source)
    backend = image.dataobj
    facts: dict[str, Any] = {
        "path": source,
        "shape (C, I, J, K)": list(image.shape),
        "dtype": str(image.dtype).replace("torch.", ""),
        "spacing": [round(s, 6) for s in image.spacing],
        "orientation": "".join(image.orientation) + "+",
        "origin": [round(x, 4) for x in image.origin],
        "affine": np.round(image.affine, 6).tolist(),
        "memory when loaded": _pretty_bytes(image.memory),
    }
    for key, value in backend.describe().items():  # type: ignore[attr-defined]
        facts[key] = _pretty(key, value)
    return facts


def _pretty(key: str, value: Any) -> Any:
    if key.startswith("size") and isinstance(value, int):
        from voxelflow.image import _pretty_bytes

        return f"{_pretty_bytes(value)} ({value} bytes)"
    return value


@app.command()
def info(
    source: str = typer.Argument(
        ..., help="Path or URI of a volume (.nii, .nii.gz, .nii.zarr, .nrrd, ...)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show shape, dtype, spacing, orientation, affine and storage facts, reading headers only."""
    facts = run_guarded(describe, source)
    if as_json:
        typer.echo(json.dumps(facts, indent=2, default=str))
        return
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "affine":
            rows = [" ".join(f"{x:10.4f}" for x in row) for row in value]
            typer.echo(f"{key:<{width}}  {rows[0]}")
            for row in rows[1:]:
                typer.echo(f"{'':<{width}}  {row}")
        else:
            typer.echo(f"{key:<{width}}  {value}")
