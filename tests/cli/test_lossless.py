"""``convert`` (the function and the command) refuses conversions the output format cannot
hold whole: axes, channels, dtype, values, affine. The check asks the format itself with a
small probe (``voxelflow.convert.check_lossless``); conversions that lose nothing pass."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

import voxelflow as tio
from voxelflow import VoxelflowValueError
from voxelflow._lossless import _holds, _probe_values
from voxelflow.convert import check_lossless, convert


def _oblique() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 1.1, 1.3])
    affine[:3, 3] = (5, -3, 2)
    return affine


def _source(folder: Path, data: np.ndarray, affine: np.ndarray, name: str = "src.nii.gz") -> Path:
    """A NIfTI file holding ``data`` given as ``(C, I, J, K)``."""
    array = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    nib.save(nib.Nifti1Image(array, affine), folder / name)
    return folder / name


def _probes_left() -> set[str]:
    return {
        name for name in os.listdir(tempfile.gettempdir()) if name.startswith("voxelflow-probe-")
    }


@pytest.mark.parametrize(
    ("dtype", "channels", "affine", "destination", "lost"),
    [
        (np.uint8, 1, np.eye(4), "out.png", "it keeps a 2-D image (one slice of the volume)"),
        (np.float32, 1, np.eye(4), "out.png", "PNG supports unsigned char and unsigned short"),
        (np.uint8, 1, np.eye(4), "out.jpg", "JPEG Writer can only write 2-dimensional images"),
        (np.uint8, 3, np.eye(4), "out.gipl", "channels: 3 written, 1 kept"),
        (np.float64, 1, np.eye(4), "out.tif", "TIFF supports"),
        (np.float32, 1, _oblique(), "out.vtk", "the orientation, spacing or origin (the affine)"),
        (np.uint8, 1, np.eye(4), "out.foo", "SimpleITK has no writer for this extension"),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("out") else None,
)
def test_lossy_conversion_is_refused_before_writing(
    tmp_path: Path, dtype: type, channels: int, affine: np.ndarray, destination: str, lost: str
) -> None:
    data = (np.arange(channels * 6 * 5 * 4).reshape(channels, 6, 5, 4) % 200).astype(dtype)
    source = _source(tmp_path, data, affine)
    before, probes = sorted(os.listdir(tmp_path)), _probes_left()
    with pytest.raises(VoxelflowValueError) as caught:
        convert(source, tmp_path / destination)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / destination}: ")
    assert f"{channels}-channel {np.dtype(dtype).name} volume of 6×5×4" in message
    assert lost in message
    assert "instead, which hold it" in message and ".nrrd" in message  # the fix
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no partial
    assert _probes_left() == probes  # the probe's temporary folder is gone


@pytest.mark.parametrize(
    ("dtype", "channels", "affine", "destination"),
    [
        (np.uint8, 1, np.eye(4), "out.nrrd"),
        (np.int16, 3, _oblique(), "out.mha"),
        (np.float64, 1, _oblique(), "out.nrrd"),
        (np.float32, 2, _oblique(), "out.nii.zarr"),
        (np.int16, 1, _oblique(), "out.nii"),
        (np.uint8, 1, _oblique(), "out.nii.gz"),
    ],
)
def test_lossless_conversions_pass_and_round_trip(
    tmp_path: Path, dtype: type, channels: int, affine: np.ndarray, destination: str
) -> None:
    rng = np.random.default_rng(0)
    data = (
        rng.integers(-100, 100, size=(channels, 7, 6, 5)).astype(dtype)
        if np.dtype(dtype).kind == "i"
        else (rng.random((channels, 7, 6, 5)) * 200).astype(dtype)
    )
    source = _source(tmp_path, data, affine)
    convert(source, tmp_path / destination, progress=False)
    back = tio.ScalarImage(tmp_path / destination, dtype="stored")  # the written values
    np.testing.assert_array_equal(back.data.numpy(), data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)


def test_the_reported_case_mni_to_png(tmp_path: Path) -> None:
    """`voxelflow convert mni.nii.gz out.png` exited 0 and wrote one slice."""
    from voxelflow.demo import template_paths

    mni = template_paths()["t1"]
    result = run_cli("convert", str(mni), "out.png", cwd=tmp_path)
    line = assert_one_line_error(result, "out.png: .png cannot hold this 1-channel")
    assert "197×233×189" in line and ".nii.gz" in line
    assert os.listdir(tmp_path) == []


def test_check_lossless_writes_nothing_and_reads_no_voxel(tmp_path: Path) -> None:
    source = _source(tmp_path, np.random.default_rng(0).random((2, 9, 8, 7)), _oblique(), "a.nii")
    image = tio.ScalarImage(source)
    check_lossless(image, tmp_path / "ok.nrrd")
    check_lossless(image, str(tmp_path / "ok.nii.zarr"))
    assert os.listdir(tmp_path) == ["a.nii"]
    assert not image.is_loaded  # the probe is made from the header alone


def test_empty_axis_is_refused_naming_the_source(tmp_path: Path) -> None:
    class Header:
        shape = (1, 4, 0, 6)
        dtype = torch.float32
        affine = np.eye(4)
        path = "corrupt.nii"

    with pytest.raises(VoxelflowValueError, match=r"corrupt.nii: its header declares a shape"):
        check_lossless(Header(), tmp_path / "out.nii.zarr")


@pytest.mark.parametrize(
    ("stored", "wanted", "holds"),
    [
        (torch.uint8, torch.uint8, True),
        (torch.uint16, torch.uint8, True),
        (torch.float32, torch.int16, True),
        (torch.float64, torch.float32, True),
        (torch.uint8, torch.bool, True),
        (torch.float32, torch.float16, True),
        (torch.uint8, torch.float32, False),
        (torch.float32, torch.int32, False),
        (torch.int16, torch.uint16, False),
        (torch.float32, torch.float64, False),
    ],
)
def test_holds_is_a_safe_cast(stored: torch.dtype, wanted: torch.dtype, holds: bool) -> None:
    assert _holds(stored, wanted) is holds


@pytest.mark.parametrize(
    "dtype",
    [
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.float32,
        torch.float64,
        torch.bool,
    ],  # fmt: skip
)
@pytest.mark.parametrize("channels", [1, 3, 12])
def test_probe_values_are_exact_and_varied(dtype: torch.dtype, channels: int) -> None:
    values = _probe_values(channels, dtype)
    assert values.shape == (channels, 2, 3, 4) and values.dtype == dtype
    distinct = torch.unique(values.to(torch.float64)).numel()
    if dtype == torch.bool:
        assert distinct == 2
    else:
        eight_bits = dtype in (torch.uint8, torch.int8)
        assert distinct == (min(channels * 24, 256) if eight_bits else channels * 24)
    if dtype.is_signed and dtype != torch.bool:
        assert values.min() < 0  # a format that drops the sign is caught
