"""Streaming conversion: bounded memory, raw values and scaling kept, atomic output."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import voxelflow as tio
from voxelflow._errors import VoxelflowValueError
from voxelflow.convert import convert

niizarr = pytest.importorskip("niizarr")


def test_conversion_memory_stays_near_the_slab(tmp_path: Path) -> None:
    shape = (128, 128, 160)  # 10 MiB of float32; slabs of 16 slices are 1 MiB
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "big.nii")
    del data
    volume_bytes = int(np.prod(shape)) * 4
    slab_bytes = 128 * 128 * 16 * 4
    tracemalloc.start()
    convert(tmp_path / "big.nii", tmp_path / "big.nii.zarr", chunk=16, levels=3, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < volume_bytes / 3, (peak, volume_bytes)
    assert peak < 4 * slab_bytes, (peak, slab_bytes)
    back = tio.ScalarImage(tmp_path / "big.nii.zarr")
    reference = np.asarray(nib.load(tmp_path / "big.nii").dataobj)
    np.testing.assert_array_equal(
        back.dataobj[:, 60:70, :, 150:].numpy()[0], reference[60:70, :, 150:]
    )


def test_nii_to_zarr_to_nii_keeps_raw_values_and_scaling(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-500, 500, size=(20, 17, 13, 2)).astype(np.int16)
    affine = np.diag([0.7, 0.8, 2.0, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(2.0, -1.0)
    image.header["descrip"] = b"round trip"
    nib.save(image, tmp_path / "a.nii")
    convert(tmp_path / "a.nii", tmp_path / "a.nii.zarr", chunk=(8, 8, 4), zarr_format=2)
    convert(tmp_path / "a.nii.zarr", tmp_path / "b.nii")
    back = nib.load(tmp_path / "b.nii")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj.get_unscaled()), data)
    assert (back.dataobj.slope, back.dataobj.inter) == (2.0, -1.0)
    assert back.header["descrip"].item() == b"round trip"
    np.testing.assert_allclose(back.affine, affine)
    reference = niizarr.zarr2nii(str(tmp_path / "a.nii.zarr"))
    np.testing.assert_array_equal(np.asarray(reference.dataobj), data)


def test_label_intent_selects_majority_pyramid(tmp_path: Path) -> None:
    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[4:12, 4:12, 4:12] = 3
    labels[::2, ::2, ::2] = 9
    image = nib.Nifti1Image(labels, np.eye(4))
    image.header.set_intent("label")
    nib.save(image, tmp_path / "seg.nii.gz")
    convert(tmp_path / "seg.nii.gz", tmp_path / "seg.nii.zarr", chunk=4, levels=2)
    level1 = tio.LabelMap(tmp_path / "seg.nii.zarr", level=1).data.numpy()
    assert set(np.unique(level1)) == {0, 3}
    with pytest.raises(VoxelflowValueError, match="majority"):
        convert(tmp_path / "seg.nii.gz", tmp_path / "x.nii.zarr", method="mean")


def test_options_are_validated(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii")
    with pytest.raises(VoxelflowValueError, match="do not apply to NIfTI"):
        convert(tmp_path / "a.nii", tmp_path / "b.nii", chunk=4)
    with pytest.raises(VoxelflowValueError, match="Did you mean 'levels'"):
        convert(tmp_path / "a.nii", tmp_path / "b.nii.zarr", lvels=4)
    with pytest.raises(VoxelflowValueError, match="same path"):
        convert(tmp_path / "a.nii", tmp_path / "a.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii"]
