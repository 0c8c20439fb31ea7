"""``voxelflow convert``: any readable volume to any writable format, streaming."""

from __future__ import annotations

import json
from typing import Any

import typer

from voxelflow.cli._app import BACKEND_HELP, app, run_guarded


def parse_storage_options(items: list[str] | None) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs → a dict; values are JSON when they parse (``anon=true``)."""
    if not items:
        return None
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(
                f"{item!r} is not KEY=VALUE (e.g. --storage-option endpoint_url=http://host:9000)"
            )
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@app.command()
def convert(
    source: str = typer.Argument(
        ..., help="Input path or URI (.nii, .nii.gz, .nii.zarr, .nrrd, s3://..., https://...)."
    ),
    destination: str = typer.Argument(
        ..., help="Output path; the extension picks the format (.nii.zarr, .nii, .nii.gz, ...)."
    ),
    chunk: int | None = typer.Option(
        None, help="[.nii.zarr] Chunk size along I, J, K (default 64)."
    ),
    shard: int | None = typer.Option(
        None, help="[.nii.zarr] Shard size (a multiple of --chunk; Zarr v3 only)."
    ),
    codec: str | None = typer.Option(
        None, help="[.nii.zarr] Compression: blosc (default), zstd, gzip or none."
    ),
    levels: int | None = typer.Option(
        None, help="[.nii.zarr] Pyramid levels incl. full resolution (default: until one chunk)."
    ),
    method: str | None = typer.Option(
        None, help="[.nii.zarr] Downsampling: mean (intensities), majority (labels), nearest."
    ),
    zarr_format: int | None = typer.Option(
        None, "--zarr-format", help="[.nii.zarr] 3 (OME 0.5, default) or 2 (OME 0.4)."
    ),
    label: bool | None = typer.Option(
        None,
        "--label/--no-label",
        help="The data are labels (default: from the NIfTI intent code).",
    ),
    level: int | None = typer.Option(None, help="Pyramid level of a .nii.zarr input."),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    storage_option: list[str] | None = typer.Option(  # noqa: B008 (typer idiom)
        None,
        "--storage-option",
        "-s",
        help="fsspec option for a remote input, KEY=VALUE (repeatable), e.g. "
        "-s endpoint_url=http://localhost:9000 -s anon=true.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Convert a volume, streaming slab by slab (never the whole volume in memory).

    Examples:

        voxelflow convert t1.nii.gz t1.nii.zarr --chunk 64 --levels 4

        voxelflow convert s3://bucket/t1.nii t1.nii.zarr -s anon=true

        voxelflow convert seg.nii.gz seg.nii.zarr --label --codec zstd

    A conversion the output format cannot hold without loss (a 3-D volume to
    .png, float to an 8-bit format, channels or the affine dropped) is refused
    before anything is written. The output appears only when complete (written
    under a temporary name, then renamed). Exit codes: 0 success, 1 bad input
    or option, 2 bad usage.
    """
    from voxelflow.convert import convert as run_convert

    options: dict[str, Any] = {
        name: value
        for name, value in {
            "chunk": chunk,
            "shard": shard,
            "codec": codec,
            "levels": levels,
            "method": method,
            "zarr_format": zarr_format,
        }.items()
        if value is not None
    }
    run_guarded(
        run_convert,
        source,
        destination,
        label=label,
        level=level,
        storage_options=parse_storage_options(storage_option),
        progress=not quiet,
        backend=backend,
        **options,
    )
    if not quiet:
        typer.echo(f"wrote {destination}", err=True)
