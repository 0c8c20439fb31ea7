"""``voxelflow index``: build the seek-point index of ``.nii.gz`` files ahead of time."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from voxelflow.cli._app import app, run_guarded


def build(path: str, *, force: bool, spacing: int, threads: int | None) -> dict[str, object]:
    """Load or build the index of one ``.nii.gz``; facts for the report line."""
    import os

    from voxelflow._errors import VoxelflowFileNotFoundError, VoxelflowValueError
    from voxelflow.backends.nifti import NiftiGzBackend, is_nifti_gz_path

    if "://" in path:
        raise VoxelflowValueError(
            f"{path}: index works on local files; a remote .nii.gz is streamed from its start, "
            "or convert it to .nii.zarr for region reads"
        )
    if not os.path.exists(path):
        raise VoxelflowFileNotFoundError(f"{path}: no such file; check the path")
    if os.path.isdir(path) or not is_nifti_gz_path(path):
        kind = "a directory" if os.path.isdir(path) else "not a .nii.gz file"
        raise VoxelflowValueError(
            f"{path}: {kind}; only gzip-compressed NIfTI files (.nii.gz) get an index "
            "(a .nii is memory-mapped and needs none)"
        )
    backend = NiftiGzBackend(path, gz_threads=threads, gz_index_spacing=spacing)
    start = time.perf_counter()
    stored = backend.build_index(force=force)
    return {
        "path": path,
        "built": stored.built,
        "seconds": time.perf_counter() - start,
        "bytes": len(stored.payload),
        "location": stored.location or "(no writable location; not stored)",
    }


@app.command()
def index(
    paths: Annotated[list[str], typer.Argument(help="One or more local .nii.gz files.")],
    force: bool = typer.Option(False, "--force", help="Rebuild even if a valid index exists."),
    spacing: int = typer.Option(
        4 << 20, "--spacing", help="Compressed bytes between seek points (default 4 MiB)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="Decoder threads (default: the usable cores)."
    ),
) -> None:
    """Build (or check) the gzip seek-point index that makes region reads of .nii.gz fast.

    The index goes beside the file (FILE.nii.gz.gzidx) when the directory is writable,
    else under $VOXELFLOW_CACHE_DIR (default ~/.cache/voxelflow). A changed file gets
    a new index automatically.
    """
    from tqdm import tqdm

    for path in tqdm(paths, desc="indexing", unit="file", disable=len(paths) < 2):
        facts = run_guarded(build, path, force=force, spacing=spacing, threads=threads)
        state = "built" if facts["built"] else "up to date"
        typer.echo(
            f"{path}: index {state} in {facts['seconds']:.2f} s, "
            f"{facts['bytes']} bytes -> {facts['location']}"
        )
