"""``voxelflow demo``: the end-to-end run on real brain MRI (see :mod:`voxelflow.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from voxelflow.cli._app import app, run_guarded


@app.command()
def demo(
    out: Path = typer.Option(Path("voxelflow-demo"), "--out", "-o", help="Output folder."),
    steps: int = typer.Option(300, min=1, help="Training steps (batches)."),
    patch_size: int = typer.Option(32, "--patch-size", min=8, help="Patch side in voxels (even)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Patches per batch."),
    inference_patch: int = typer.Option(
        64,
        "--inference-patch",
        min=8,
        help="Patch side at inference (the network is fully convolutional).",
    ),
    overlap: int = typer.Option(
        16, min=0, help="Grid overlap at inference (even, < inference patch)."
    ),
    device: str = typer.Option("cpu", help="Torch device: cpu, cuda, cuda:1, mps."),
    workers: int = typer.Option(1, min=0, help="Background threads of the patch queue."),
    seed: int = typer.Option(0, help="Seed for sampling, augmentation and weights."),
) -> None:
    """Train a tissue segmenter on half a brain and segment the other half.

    The MNI ICBM152 T1 template and tissue maps ship inside nilearn: nothing is downloaded.
    Trains on the left hemisphere, reports Dice on the right one beside a threshold baseline.

    Writes t1 and labels as .nii.zarr, the segmentation as .nii.gz and .nii.zarr, a PNG
    figure and summary.json into --out. A few minutes on two CPU cores with the defaults.
    """
    from voxelflow.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig(
        out_dir=out,
        steps=steps,
        patch_size=patch_size,
        batch_size=batch_size,
        inference_patch_size=inference_patch,
        patch_overlap=overlap,
        device=device,
        workers=workers,
        seed=seed,
    )
    result = run_guarded(run_demo, config)
    typer.echo(format_summary(result))
