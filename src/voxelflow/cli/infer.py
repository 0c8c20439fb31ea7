"""``voxelflow infer``: run a saved model over a volume patch by patch.

Everything that can be checked is checked before the work starts (options,
device, output path and format, the input's header, the model file's safety,
the model's fit to this image's patches with one forward pass on zeros); the
loop then only reads, runs and blends. Model loading and the checks live in
:mod:`voxelflow.cli._model`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from voxelflow._errors import VoxelflowValueError
from voxelflow.cli._app import BACKEND_HELP, app, run_guarded

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_PATCH = 64
DEFAULT_BATCH = 4


@dataclass(frozen=True)
class _OutputSpec:
    """What the output will be, for the format check (no voxels)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    affine: np.ndarray


def check_options(
    *,
    patch: int | None,
    overlap: int,
    batch: int | None,
    workers: int,
    mode: str,
    padding: str | None,
) -> None:
    """Values the command line cannot refuse by type alone (each error names the option)."""
    from voxelflow._errors import check_choice
    from voxelflow._padding import PADDING_MODES
    from voxelflow.patches.aggregator import OVERLAP_MODES

    for name, value, low, meaning in (
        ("--patch", patch, 1, "voxels per side"),
        ("--batch", batch, 1, "patches per forward pass"),
        ("--overlap", overlap, 0, "voxels shared by neighbouring patches"),
        ("--workers", workers, 0, "0 reads patches in the main process"),
    ):
        if value is not None and value < low:
            raise VoxelflowValueError(
                f"{name} {value}: must be {low} or more ({meaning}); e.g. {name} {max(low, 1)}"
            )
    check_choice("--mode", mode, OVERLAP_MODES)
    if padding is not None:
        check_choice("--padding", padding, PADDING_MODES)


def check_output_path(path: str, *, on_disk: bool) -> None:
    """The output can be written where it is named, before any work (no file is created)."""
    from voxelflow.backends.niftizarr import is_niftizarr_output, is_remote

    if is_remote(path):
        raise VoxelflowValueError(
            f"{path}: infer writes local files only; write locally, then upload the output"
        )
    if on_disk and not is_niftizarr_output(path):
        raise VoxelflowValueError(
            f"{path}: --on-disk writes NIfTI-Zarr; name the output *.nii.zarr"
        )
    if os.path.isdir(path):
        raise VoxelflowValueError(
            f"{path}: already exists and is a directory; infer does not replace directories: "
            "remove it or name another output"
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise VoxelflowValueError(
            f"{path}: the folder {parent} does not exist; create it first (mkdir -p)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VoxelflowValueError(
            f"{path}: the folder {parent} is not writable; choose an output in a folder you can "
            "write to"
        )


def infer_volume(
    model_path: str,
    input_path: str,
    output_path: str,
    *,
    patch: int | None = None,
    overlap: int = 16,
    mode: str = "hann",
    batch: int | None = None,
    argmax: bool = False,
    device: str = "cpu",
    on_disk: bool = False,
    padding: str | None = None,
    workers: int = 0,
    backend: str | None = None,
    trust_model: bool = False,
    progress: bool = True,
) -> None:
    """Read ``input_path`` lazily, run the model on its grid of patches, blend, write ``output_path``.

    ``patch`` and ``batch`` default to an exported program's fixed input shape,
    else to 64 and 4.
    """
    import torch

    import voxelflow as tio
    from voxelflow.backends.niftizarr import is_niftizarr_output
    from voxelflow.cli import _model
    from voxelflow.convert import check_lossless
    from voxelflow.inference import plan_grid, sliding_window
    from voxelflow.patches.slabs import label_dtype

    # 1. What the command line alone says, then the machine, then the output's place.
    check_options(
        patch=patch, overlap=overlap, batch=batch, workers=workers, mode=mode, padding=padding
    )
    torch_device = _model.resolve_device(device)
    check_output_path(output_path, on_disk=on_disk)
    zarr_output = is_niftizarr_output(output_path)
    # 2. The input's header, the model file (safely), and whether they fit.
    image = tio.ScalarImage(input_path, backend=backend)
    channels, *spatial = image.shape
    model = _model.load_model(model_path, torch_device, trust=trust_model)
    patch_size = (patch,) * 3 if patch is not None else model.fixed_patch or (DEFAULT_PATCH,) * 3
    batch_size = batch if batch is not None else model.fixed_batch or DEFAULT_BATCH
    if overlap >= min(patch_size):
        raise VoxelflowValueError(
            f"--overlap {overlap} must be smaller than the patch ({'×'.join(map(str, patch_size))})"
            f" or the grid would not advance; pass --overlap {min(patch_size) // 4} or a larger --patch"
        )
    plan_grid(image.spatial_shape, patch_size, overlap, padding, name=input_path)  # it fits
    fit = _model.probe(
        model,
        image=input_path,
        channels=channels,
        patch=patch_size,  # type: ignore[arg-type]
        batch=batch_size,
        device=torch_device,
    )
    # 3. Whether the output's format holds what the model returns.
    out_channels, out_dtype = (
        (1, label_dtype(fit.channels)) if argmax else (fit.channels, torch.float32)
    )
    check_lossless(_OutputSpec((out_channels, *spatial), out_dtype, image.affine), output_path)
    # 4. The work.
    result = sliding_window(
        functools.partial(_model.run_batch, model),
        image,
        patch_size,
        overlap,
        mode,  # type: ignore[arg-type]
        batch_size,
        torch_device,
        reduce="argmax" if argmax else None,
        on_disk=output_path if zarr_output else None,
        progress=progress,
        padding_mode=padding,
    )
    if not zarr_output:
        result.save(output_path)


@app.command()
def infer(
    model: str = typer.Argument(
        ...,
        help="TorchScript model (torch.jit.save) or exported program (torch.export.save, .pt2).",
    ),
    input_path: str = typer.Argument(..., metavar="INPUT", help="Input volume (read lazily)."),
    output_path: str = typer.Argument(
        ..., metavar="OUTPUT", help="Output volume (.nii, .nii.gz, .nii.zarr, .nrrd, .mha)."
    ),
    patch: int | None = typer.Option(
        None,
        "--patch",
        help=f"Patch size (voxels per side); default: the exported program's, else {DEFAULT_PATCH}.",
    ),
    overlap: int = typer.Option(16, "--overlap", help="Overlap between neighbouring patches."),
    mode: str = typer.Option("hann", "--mode", help="Blending: crop, average, hann, gaussian."),
    batch: int | None = typer.Option(
        None,
        "--batch",
        help=f"Patches per forward pass; default: the exported program's, else {DEFAULT_BATCH}.",
    ),
    argmax: bool = typer.Option(False, "--argmax", help="Write the argmax over channels (labels)."),
    device: str = typer.Option(
        "cpu", "--device", help="Device for the model (cpu, cuda, cuda:1, mps); checked first."
    ),
    on_disk: bool = typer.Option(
        False,
        "--on-disk",
        help="Accumulate in the output .nii.zarr with bounded memory (always on for .nii.zarr).",
    ),
    padding: str | None = typer.Option(
        None, "--padding", help="Pad the border (constant, edge, reflect, symmetric)."
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        help="Unused: patches are read in a background thread while the model runs "
        "(accepted so that existing scripts keep working).",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help=BACKEND_HELP,
    ),
    trust_model: bool = typer.Option(
        False,
        "--trust-model",
        help="Load an exported program (.pt2) without checking it first. torch.export.load "
        "can run code stored in the file (pickled payloads, shape expressions, guard code); "
        "by default voxelflow loads only archives whose every part is plain data. Use only "
        "for files from a source you trust. TorchScript files are always loaded safely.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run MODEL over INPUT patch by patch and write the blended output to OUTPUT.

    Before any work: the options, the device, the output's folder and format
    (it must hold the model's output without loss), the input's header, the
    model file (never code from it unless --trust-model), and one forward pass
    on zeros shaped like the run's batches (channels, patch size, and an
    exported program's fixed shape). A fixed-batch program gets its short last
    batch padded.

    Example:

        voxelflow infer model.pt t1.nii.gz seg.nii.gz --patch 64 --overlap 16 --argmax
    """
    options: dict[str, Any] = {
        "patch": patch,
        "overlap": overlap,
        "mode": mode,
        "batch": batch,
        "argmax": argmax,
        "device": device,
        "on_disk": on_disk,
        "padding": padding,
        "workers": workers,
        "backend": backend,
        "trust_model": trust_model,
        "progress": not quiet,
    }
    run_guarded(infer_volume, model, input_path, output_path, **options)
