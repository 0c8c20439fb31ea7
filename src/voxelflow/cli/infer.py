"""``voxelflow infer``: run a saved model over a volume patch by patch."""

from __future__ import annotations

import os
from typing import Any

import torch
import typer

from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowRuntimeError,
    VoxelflowValueError,
    check_choice,
)
from voxelflow.cli._app import app, run_guarded
from voxelflow.patches.aggregator import OVERLAP_MODES
from voxelflow.patches.sampler import PADDING_MODES


def load_model(path: str, device: torch.device) -> Any:
    """A TorchScript model (``torch.jit.save``) or an exported program (``torch.export``, ``.pt2``)."""
    if not os.path.exists(path):
        raise VoxelflowFileNotFoundError(f"{path}: no such model file")
    try:
        if path.endswith(".pt2"):
            return torch.export.load(path).module().to(device)
        model = torch.jit.load(path, map_location=device)
    except Exception as error:
        raise VoxelflowValueError(
            f"{path}: not a TorchScript model (torch.jit.save) or an exported program "
            f"(torch.export.save, .pt2): {str(error).splitlines()[0]}"
        ) from error
    model.eval()
    return model


def infer_volume(
    model_path: str,
    input_path: str,
    output_path: str,
    *,
    patch: int,
    overlap: int,
    mode: str,
    batch: int,
    argmax: bool,
    device: str,
    on_disk: bool,
    padding: str | None,
    workers: int,
    progress: bool = True,
) -> None:
    """Read ``input_path`` lazily, run the model on its grid of patches, blend, write ``output_path``."""
    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    check_choice("--mode", mode, OVERLAP_MODES)
    if padding is not None:
        check_choice("--padding", padding, PADDING_MODES)
    if batch <= 0:
        raise VoxelflowValueError(f"--batch must be positive, got {batch}")
    try:
        torch_device = torch.device(device)
    except RuntimeError as error:
        raise VoxelflowValueError(
            f"--device {device!r}: {error}; use cpu, cuda or cuda:N"
        ) from None
    zarr_output = output_path.endswith(".nii.zarr")
    if on_disk and not zarr_output:
        raise VoxelflowValueError(
            f"{output_path}: --on-disk writes NIfTI-Zarr; name the output *.nii.zarr"
        )
    model = load_model(model_path, torch_device)
    image = tio.ScalarImage(input_path)
    subject = tio.Subject(image=image)
    sampler = tio.GridSampler(subject, patch, overlap, padding_mode=padding)
    aggregator = tio.PatchAggregator.from_sampler(
        sampler,
        overlap_mode=mode,
        device=torch.device("cpu") if zarr_output else torch_device,
        on_disk=output_path if zarr_output else None,
        argmax=argmax and zarr_output,
    )
    loader = SubjectsLoader(sampler, batch_size=batch, num_workers=workers)
    from tqdm import tqdm

    try:
        with torch.inference_mode():
            for patches in tqdm(loader, desc="infer", unit="batch", disable=not progress):
                inputs = patches.image.data.to(torch_device, torch.float32)
                try:
                    outputs = model(inputs)
                except Exception as error:
                    raise VoxelflowRuntimeError(
                        f"{model_path}: the model failed on a batch of shape "
                        f"{tuple(inputs.shape)}: {str(error).splitlines()[0]}"
                    ) from error
                if isinstance(outputs, tuple | list):
                    outputs = outputs[0]
                aggregator.add_batch(outputs, patches)
        if zarr_output:
            aggregator.finish()
        else:
            aggregator.save(output_path, argmax=argmax)
    except BaseException:
        aggregator.abort()
        raise


@app.command()
def infer(
    model: str = typer.Argument(
        ..., help="TorchScript model (.pt) or torch.export program (.pt2)."
    ),
    input_path: str = typer.Argument(..., metavar="INPUT", help="Input volume (read lazily)."),
    output_path: str = typer.Argument(
        ..., metavar="OUTPUT", help="Output volume (.nii, .nii.gz, .nii.zarr, .nrrd, ...)."
    ),
    patch: int = typer.Option(64, "--patch", help="Patch size (voxels per side)."),
    overlap: int = typer.Option(16, "--overlap", help="Overlap between neighbouring patches."),
    mode: str = typer.Option("hann", "--mode", help="Blending: crop, average, hann, gaussian."),
    batch: int = typer.Option(4, "--batch", help="Patches per forward pass."),
    argmax: bool = typer.Option(False, "--argmax", help="Write the argmax over channels (labels)."),
    device: str = typer.Option("cpu", "--device", help="Device for the model (cpu, cuda, cuda:1)."),
    on_disk: bool = typer.Option(
        False,
        "--on-disk",
        help="Accumulate in the output .nii.zarr with bounded memory (always on for .nii.zarr).",
    ),
    padding: str | None = typer.Option(
        None, "--padding", help="Pad the border (constant, edge, reflect, symmetric)."
    ),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers reading patches."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run MODEL over INPUT patch by patch and write the blended output to OUTPUT."""
    run_guarded(
        infer_volume,
        model,
        input_path,
        output_path,
        patch=patch,
        overlap=overlap,
        mode=mode,
        batch=batch,
        argmax=argmax,
        device=device,
        on_disk=on_disk,
        padding=padding,
        workers=workers,
        progress=not quiet,
    )
