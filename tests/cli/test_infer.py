"""``voxelflow infer`` end to end on a small TorchScript model."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import voxelflow as tio
from voxelflow.cli import app
from voxelflow.loader import SubjectsLoader

runner = CliRunner()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).softmax(dim=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("infer")
    model = Net().eval()
    torch.jit.save(torch.jit.script(model), folder / "model.pt")
    volume = np.random.default_rng(0).random((40, 36, 30)).astype(np.float32)
    affine = np.diag([0.9, 1.1, 1.3, 1.0])
    affine[:3, 3] = (5, -3, 2)
    nib.save(nib.Nifti1Image(volume, affine), folder / "input.nii.gz")
    return folder, model, affine


def expected_output(folder, model, mode="hann"):
    subject = tio.Subject(image=tio.ScalarImage(folder / "input.nii.gz"))
    sampler = tio.GridSampler(subject, 16, 4)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    with torch.no_grad():
        for batch in SubjectsLoader(sampler, batch_size=3):
            aggregator.add_batch(model(batch.image.data), batch)
    return aggregator.get_output()


def invoke(*args: str):
    return runner.invoke(app, ["infer", *args, "--quiet"])


def test_infer_writes_the_blended_output(files):
    folder, model, affine = files
    out = folder / "probabilities.nii.gz"
    result = invoke(
        str(folder / "model.pt"),
        str(folder / "input.nii.gz"),
        str(out),
        "--patch",
        "16",
        "--overlap",
        "4",
        "--mode",
        "hann",
        "--batch",
        "3",
    )
    assert result.exit_code == 0, result.output
    image = tio.ScalarImage(out)
    assert image.shape == (3, 40, 36, 30)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    torch.testing.assert_close(image.data, expected_output(folder, model), rtol=1e-5, atol=1e-6)


def test_infer_argmax_to_a_label_map(files):
    folder, model, _ = files
    out = folder / "labels.nii"
    result = invoke(
        str(folder / "model.pt"),
        str(folder / "input.nii.gz"),
        str(out),
        "--patch",
        "16",
        "--overlap",
        "4",
        "--mode",
        "crop",
        "--argmax",
    )
    assert result.exit_code == 0, result.output
    labels = nib.load(out)
    assert labels.get_data_dtype() == np.uint8
    expected = expected_output(folder, model, "crop").argmax(0).numpy()
    np.testing.assert_array_equal(np.asarray(labels.dataobj), expected)


def test_infer_on_disk_to_nifti_zarr(files):
    folder, model, affine = files
    out = folder / "probabilities.nii.zarr"
    result = invoke(
        str(folder / "model.pt"),
        str(folder / "input.nii.gz"),
        str(out),
        "--patch",
        "16",
        "--overlap",
        "4",
        "--on-disk",
    )
    assert result.exit_code == 0, result.output
    import zarr

    stored = np.asarray(zarr.open_group(out, mode="r")["0"])  # (c, z, y, x)
    expected = expected_output(folder, model).numpy()
    np.testing.assert_allclose(stored.transpose(0, 3, 2, 1), expected, rtol=1e-5, atol=1e-6)


def test_infer_exported_program(files):
    folder, model, _ = files
    program = torch.export.export(model, (torch.rand(2, 1, 16, 16, 16),))
    torch.export.save(program, folder / "model.pt2")
    out = folder / "exported.nii.gz"
    result = invoke(
        str(folder / "model.pt2"),
        str(folder / "input.nii.gz"),
        str(out),
        "--patch",
        "16",
        "--overlap",
        "4",
        "--batch",
        "2",
        "--padding",
        "edge",
    )
    assert result.exit_code == 0, result.output
    assert tio.ScalarImage(out).shape == (3, 40, 36, 30)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.pt", "input.nii.gz", "o.nii.gz"], 1, "missing.pt: no such model file"),
        (["input.nii.gz", "input.nii.gz", "o.nii.gz"], 1, "not a TorchScript model"),
        (["model.pt", "nope.nii.gz", "o.nii.gz"], 1, "nope.nii.gz: no such file"),
        (["model.pt", "input.nii.gz", "o.nii.gz", "--mode", "han"], 1, "Did you mean 'hann'"),
        (["model.pt", "input.nii.gz", "o.nii.gz", "--patch", "64"], 1, "pass padding_mode="),
        (["model.pt", "input.nii.gz", "o.nii.gz", "--overlap", "64"], 1, "must be smaller"),
        (["model.pt", "input.nii.gz", "o.nii.gz", "--on-disk"], 1, "name the output *.nii.zarr"),
        (["model.pt", "input.nii.gz", "o.nii.gz", "--patchsize", "8"], 2, "No such option"),
    ],
)
def test_infer_errors(files, monkeypatch, args, code, message):
    folder, _, _ = files
    monkeypatch.chdir(folder)
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (folder / "o.nii.gz").exists()
