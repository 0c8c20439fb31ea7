"""``voxelflow info`` and ``voxelflow convert`` end to end (exit codes 0/1/2)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

import voxelflow as tio
from voxelflow.cli import app

runner = CliRunner()


def _nifti(tmp_path: Path) -> Path:
    data = np.arange(30 * 20 * 10, dtype=np.float32).reshape(30, 20, 10)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 1.0, 3.0, 1.0])), tmp_path / "a.nii")
    return tmp_path / "a.nii"


def test_convert_then_info(tmp_path: Path) -> None:
    source = _nifti(tmp_path)
    out = tmp_path / "a.nii.zarr"
    result = runner.invoke(
        app, ["convert", str(source), str(out), "--chunk", "8", "--levels", "2", "--codec", "zstd"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        tio.ScalarImage(out).data.numpy()[0], nib.load(source).get_fdata()
    )
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    for line in (
        "shape (C, I, J, K)        [1, 30, 20, 10]",
        "spacing                   [2.0, 1.0, 3.0]",
        "chunks (I, J, K)          [8, 8, 8]",
        "pyramid levels (I, J, K)  [[30, 20, 10], [15, 10, 5]]",
        "codecs                    bytes, zstd",
        "size on disk",
    ):
        assert line in result.output
    result = runner.invoke(app, ["info", str(out), "--level", "1", "--json"])
    assert result.exit_code == 0 and '"level": "1 of 2"' in result.output


def test_exit_codes_and_messages(tmp_path: Path) -> None:
    source = _nifti(tmp_path)
    missing = runner.invoke(app, ["info", str(tmp_path / "nope.nii.zarr")])
    assert missing.exit_code == 1 and "nope.nii.zarr" in missing.output
    bad_codec = runner.invoke(
        app, ["convert", str(source), str(tmp_path / "o.nii.zarr"), "--codec", "lz5"]
    )
    assert bad_codec.exit_code == 1 and "codec='lz5'" in bad_codec.output
    usage = runner.invoke(app, ["convert", str(source)])
    assert usage.exit_code == 2
    wrong = runner.invoke(app, ["convert", str(source), str(tmp_path / "o.nii"), "--chunk", "4"])
    assert wrong.exit_code == 1 and "do not apply to NIfTI" in wrong.output
    assert not (tmp_path / "o.nii").exists() and not (tmp_path / "o.nii.zarr").exists()
    help_text = runner.invoke(app, ["convert", "--help"]).output
    assert "--shard" in help_text and "Exit codes" in help_text
