"""A shortened ``voxelflow demo``: every stage runs on the real MNI template, quickly."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import voxelflow as tio
from voxelflow.cli import app
from voxelflow.demo import IGNORE, DemoConfig, dice_scores, run_demo, threshold_baseline

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoConfig, object]:
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(
        out_dir=out,
        steps=4,
        patch_size=16,
        batch_size=2,
        inference_patch_size=64,
        patch_overlap=0,
        workers=1,
    )
    return config, run_demo(config)


def test_prepare_builds_tissue_labels_from_the_template(demo_run) -> None:
    config, _ = demo_run
    labels = tio.LabelMap(config.out_dir / "tissues.nii.zarr")
    assert labels.shape == (1, 197, 233, 189)  # the MNI ICBM152 grid, read lazily
    values = labels.data[0].numpy()
    fractions = np.bincount(values.ravel(), minlength=4) / values.size
    # Background ~78%, grey matter ~12%, white matter ~7%, CSF/other ~2% of the box.
    assert 0.70 < fractions[0] < 0.85 and 0.08 < fractions[2] < 0.16 and 0.04 < fractions[3] < 0.10
    train = tio.LabelMap(config.out_dir / "train_labels.nii.zarr").data[0].numpy()
    world_x = labels.affine[0, 0] * np.arange(197) + labels.affine[0, 3]
    assert (train[world_x >= 0] == IGNORE).all()  # the right hemisphere is hidden
    assert np.array_equal(train[world_x < 0], values[world_x < 0])


def test_outputs_agree_and_summary_is_complete(demo_run) -> None:
    config, result = demo_run
    out = config.out_dir
    gz = nib.load(out / "segmentation.nii.gz")
    zarr = tio.LabelMap(out / "segmentation.nii.zarr")
    assert np.array_equal(np.asarray(gz.dataobj), zarr.data[0].numpy())
    assert np.allclose(gz.affine, zarr.affine)
    assert (out / "segmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"prepare", "train", "infer", "write", "total"}
    for name in ("CSF/other", "grey matter", "white matter"):
        assert 0.0 <= summary["dice"][name] <= 1.0
        assert summary["dice_baseline"][name] > 0.6  # thresholds are a real baseline
    assert all(stage["peak_rss_mib"] > 0 for stage in summary["stages"].values())


def test_dice_and_threshold_baseline_are_right_on_known_inputs() -> None:
    truth = np.array([0, 1, 2, 2, 3, 3, 3, 0], dtype=np.uint8)
    prediction = np.array([0, 1, 2, 3, 3, 3, 2, 0], dtype=np.uint8)
    scores = dice_scores(prediction, truth, np.ones(8, bool))
    assert scores == {"CSF/other": 1.0, "grey matter": 0.5, "white matter": 2 * 2 / 6}
    t1 = np.array([0.0, 0.2, 0.5, 0.55, 0.9, 0.95, 0.85, 0.0])
    baseline = threshold_baseline(t1, truth, np.ones(8, bool))
    assert np.array_equal(baseline, [0, 1, 2, 2, 3, 3, 3, 0])


def test_cli_help_documents_the_options() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    for option in ("--steps", "--patch-size", "--device", "--out"):
        assert option in result.output


def test_tiny_unet_is_fully_convolutional() -> None:
    from voxelflow.demo import TinyUNet

    model = TinyUNet(1, 4).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 48, 16)).shape == (1, 4, 32, 48, 16)
