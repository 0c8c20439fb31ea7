"""``voxelflow infer`` end to end on a small TorchScript model."""

from __future__ import annotations

import os

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


# --------------------------------------------------------------------------- pre-flight
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from cli_helpers import make_files

    return make_files(tmp_path_factory)


def _reference(small, model, patch=8, overlap=2, mode="hann", padding=None):
    subject = tio.Subject(image=tio.ScalarImage(small.image))
    sampler = tio.GridSampler(subject, patch, overlap, padding_mode=padding)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    with torch.no_grad():
        for batch in SubjectsLoader(sampler, batch_size=5):
            aggregator.add_batch(model(batch.image.data), batch)
    return aggregator.get_output()


def test_fixed_batch_program_adopts_its_shape_and_pads_the_last_batch(small, tmp_path):
    """static.pt2 was exported on (2, 1, 8, 8, 8): no --batch/--patch needed, odd patch count."""
    from voxelflow.cli import _model

    sampler = tio.GridSampler(tio.Subject(image=tio.ScalarImage(small.image)), 8, 5)
    assert len(sampler) % 2 == 1  # so the last batch is short and must be padded
    out = tmp_path / "out.nii.gz"
    result = invoke(str(small.static), str(small.image), str(out), "--overlap", "5")
    assert result.exit_code == 0, result.output
    expected = _reference(small, small.model, overlap=5)
    torch.testing.assert_close(tio.ScalarImage(out).data, expected, rtol=1e-5, atol=1e-6)
    model = _model.load_model(str(small.static), torch.device("cpu"))
    assert (model.fixed_batch, model.fixed_channels, model.fixed_patch) == (2, 1, (8, 8, 8))
    assert _model.load_model(str(small.dynamic), torch.device("cpu")).fixed_batch is None


def test_fixed_channels_of_a_program_checked_against_the_image(small, tmp_path):
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12, 2), np.float32), np.eye(4)), two)
    result = invoke(str(small.static), str(two), str(tmp_path / "o.nii.gz"), "--overlap", "2")
    assert result.exit_code == 1
    assert "static.pt2: the model takes 1 input channel(s) but" in result.stderr
    assert "two.nii.gz has 2" in result.stderr


class DividesBy4(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, i, j, k = x.shape
        return x.reshape(b, c, i // 4, 4, j, k).mean(3).repeat_interleave(4, dim=2)


class FailsOnData(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.abs().sum() > 0):
            raise RuntimeError("out of cheese")
        return x


@pytest.fixture
def count_batches(monkeypatch):
    """How many batches reach the model through the work loop."""
    from voxelflow.cli import _model

    calls = []
    real = _model.run_batch
    monkeypatch.setattr(_model, "run_batch", lambda model, x: calls.append(1) or real(model, x))
    return calls


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("foo", "x.foo: .foo cannot hold"),
        ("channels", "two.pt: the model takes 2 input channel(s) but"),
        ("patch", "fails on a batch of zeros shaped like this run's (1, 1, 10, 10, 10)"),
        ("argmax-png", "o.png: .png cannot hold this 1-channel uint8 volume of 20×18×14"),
    ],
)
def test_refused_before_any_batch_runs(small, tmp_path, count_batches, case, message):
    model, out, extra = str(small.torchscript), str(tmp_path / "o.nii.gz"), []
    if case == "foo":
        out = str(tmp_path / "x.foo")
    elif case == "channels":
        model = str(small.two_channels)
    elif case == "patch":
        torch.jit.save(torch.jit.script(DividesBy4()), tmp_path / "div4.pt")
        model, extra = str(tmp_path / "div4.pt"), ["--patch", "10"]
    elif case == "argmax-png":
        out, extra = str(tmp_path / "o.png"), ["--argmax"]
    result = invoke(model, str(small.image), out, "--patch", "8", "--overlap", "2", *extra)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert count_batches == []  # refused before the work started
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["div4.pt"])


def test_a_model_failing_mid_run_leaves_nothing(small, tmp_path, count_batches):
    torch.jit.save(torch.jit.script(FailsOnData()), tmp_path / "fails.pt")
    out = tmp_path / "o.nii.zarr"
    result = invoke(
        str(tmp_path / "fails.pt"), str(small.image), str(out), "--patch", "8", "--overlap", "2"
    )
    assert result.exit_code == 1
    assert "fails.pt: the model failed on a batch of shape (4, 1, 8, 8, 8): " in result.stderr
    assert "out of cheese" in result.stderr
    assert count_batches == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fails.pt"]  # no store, no partial


def test_device_and_output_checks():
    from voxelflow import VoxelflowValueError
    from voxelflow.cli._model import resolve_device
    from voxelflow.cli.infer import check_output_path

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(VoxelflowValueError, match="'gpu0' is not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(VoxelflowValueError, match="CUDA is not available.*use --device cpu"):
            resolve_device("cuda:1")
    if not torch.backends.mps.is_available():
        with pytest.raises(VoxelflowValueError, match="MPS is not available"):
            resolve_device("mps")
    with pytest.raises(VoxelflowValueError, match="infer writes local files only"):
        check_output_path("s3://bucket/o.nii.zarr", on_disk=False)
    with pytest.raises(VoxelflowValueError, match="name the output"):
        check_output_path("o.nii.gz", on_disk=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_unwritable_output_folder(small, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke(str(small.torchscript), str(small.image), str(locked / "o.nii.gz"))
    assert result.exit_code == 1 and "is not writable" in result.stderr
