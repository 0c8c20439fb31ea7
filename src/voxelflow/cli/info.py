"""``voxelflow info``: what a volume is, from its header only."""

from __future__ import annotations

import json
from typing import Any

import typer

from voxelflow.cli._app import BACKEND_HELP, app, run_guarded


def describe(
    source: str,
    level: int | None = None,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Header facts about ``source`` (reads no voxel data)."""
    import numpy as np

    from voxelflow._errors import VoxelflowValueError
    from voxelflow._format import pretty_bytes
    from voxelflow.image import Image

    image = Image(source, level=level, storage_options=storage_options, backend=backend)
    if any(int(size) < 1 for size in image.shape):
        # Never print an impossible header as facts (the backends refuse most of these first).
        raise VoxelflowValueError(
            f"{source}: the header declares a shape of {list(image.shape)} (C, I, J, K); every "
            "size must be 1 or more. The header is corrupt: re-copy or re-export the file"
        )
    storage = image.dataobj
    facts: dict[str, Any] = {
        "path": source,
        "shape (C, I, J, K)": list(image.shape),
        "dtype": str(image.stored_dtype).replace("torch.", ""),
        "read as (ScalarImage)": str(image.dtype).replace("torch.", ""),
        "spacing": [round(s, 6) for s in image.spacing],
        "orientation": "".join(image.orientation) + "+",
        "origin": [round(x, 4) for x in image.origin],
        "affine": np.round(image.affine, 6).tolist(),
        "memory when loaded": pretty_bytes(image.memory),
    }
    for key, value in storage.describe().items():  # type: ignore[attr-defined]
        facts[key] = _pretty(key, value)
    return facts


def _pretty(key: str, value: Any) -> Any:
    if key.startswith("size") and isinstance(value, int):
        from voxelflow._format import pretty_bytes

        return f"{pretty_bytes(value)} ({value} bytes)"
    return value


@app.command()
def info(
    source: str = typer.Argument(
        ..., help="Path or URI of a volume (.nii, .nii.gz, .nii.zarr, .nrrd, ...)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    level: int | None = typer.Option(None, help="Pyramid level of a .nii.zarr store."),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    storage_option: list[str] | None = typer.Option(  # noqa: B008 (typer idiom)
        None,
        "--storage-option",
        "-s",
        help="fsspec option for a remote URI, KEY=VALUE (repeatable), e.g. -s anon=true.",
    ),
) -> None:
    """Show shape, dtype, spacing, orientation, affine and storage facts, reading headers only.

    For .nii.zarr: chunking, shards, codecs, pyramid levels and size on disk too.
    """
    from voxelflow.cli.convert import parse_storage_options

    facts = run_guarded(describe, source, level, parse_storage_options(storage_option), backend)
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
