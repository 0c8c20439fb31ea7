"""The SimpleITK backend: NRRD, MHA/MHD, DICOM series, against nibabel and SimpleITK."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import voxelflow as tio
from voxelflow.backends import SimpleITKBackend
from voxelflow.backends.sitk import affine_from_sitk, sitk_geometry

SPACING = (0.7, 1.3, 2.1)
ORIGIN = (-12.5, 40.25, 7.0)


def rotation() -> np.ndarray:
    """A proper rotation about an oblique axis (a non-trivial direction matrix)."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = 0.4
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def ras_affine() -> np.ndarray:
    """The RAS+ affine of the SimpleITK geometry above, written out by hand (LPS → RAS)."""
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = flip @ rotation() @ np.diag(SPACING)
    affine[:3, 3] = flip @ np.array(ORIGIN)
    return affine


def sitk_image(array_kji: np.ndarray, is_vector: bool = False) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji, isVector=is_vector)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(rotation().ravel().tolist())
    return image


@pytest.fixture
def scalar(rng: np.random.Generator) -> np.ndarray:
    """(I, J, K) int16 values."""
    return rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_sitk_formats_equal_nifti(tmp_path: Path, scalar: np.ndarray, suffix: str) -> None:
    nib.save(nib.Nifti1Image(scalar, ras_affine()), tmp_path / "ref.nii")
    sitk.WriteImage(sitk_image(scalar.transpose(2, 1, 0)), str(tmp_path / f"img{suffix}"))
    reference = tio.ScalarImage(tmp_path / "ref.nii", dtype="stored")
    image = tio.ScalarImage(tmp_path / f"img{suffix}", dtype="stored")
    assert isinstance(image.dataobj, SimpleITKBackend)
    assert image.shape == reference.shape == (1, 6, 7, 8)
    assert image.dtype == reference.dtype == torch.int16
    np.testing.assert_allclose(image.affine, ras_affine(), atol=1e-6)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)
    np.testing.assert_allclose(image.spacing, SPACING, rtol=1e-6)
    np.testing.assert_array_equal(image.numpy(), reference.numpy())
    np.testing.assert_array_equal(image.numpy()[0], scalar)
    region = image[:, 1:5:2, ::-1, 3]
    np.testing.assert_array_equal(region.numpy(), reference[:, 1:5:2, ::-1, 3].numpy())
    np.testing.assert_allclose(region.affine, reference[:, 1:5:2, ::-1, 3].affine, atol=1e-5)


def test_vector_image_is_channels(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(3, 5, 6, 7)).astype(np.float32)  # (C, I, J, K)
    sitk.WriteImage(
        sitk_image(data.transpose(3, 2, 1, 0), is_vector=True), str(tmp_path / "v.nrrd")
    )
    image = tio.ScalarImage(tmp_path / "v.nrrd")
    assert image.shape == (3, 5, 6, 7)
    np.testing.assert_array_equal(image.numpy(), data)
    np.testing.assert_array_equal(image.dataobj[2, :, 1].numpy(), data[2:, :, 1:2])


def test_header_only_until_data_is_read(tmp_path: Path, scalar: np.ndarray) -> None:
    sitk.WriteImage(sitk_image(scalar.transpose(2, 1, 0)), str(tmp_path / "h.nrrd"))
    image = tio.ScalarImage(tmp_path / "h.nrrd")
    backend = image.dataobj
    assert isinstance(backend, SimpleITKBackend) and not backend.region_reads
    image.shape, image.affine, image.spacing, image.dtype  # noqa: B018
    region = image[:, 2:4]
    assert backend._volume is None  # header and slicing read no pixel
    np.testing.assert_array_equal(region.numpy()[0], scalar[2:4])
    assert backend._volume is not None  # a region read loads the volume once (documented)
    assert not image.is_loaded
    copy = pickle.loads(pickle.dumps(image))
    assert copy.dataobj._volume is None  # type: ignore[attr-defined]  (not pickled)
    np.testing.assert_array_equal(copy.numpy()[0], scalar)
    image.load()
    image.unload()  # drops the decoded volume too
    assert backend._volume is None and not image.is_loaded


def test_affine_helpers_are_inverse() -> None:
    affine = ras_affine()
    spacing, origin, direction = sitk_geometry(affine)
    np.testing.assert_allclose(spacing, SPACING)
    np.testing.assert_allclose(origin, ORIGIN)
    np.testing.assert_allclose(np.reshape(direction, (3, 3)), rotation(), atol=1e-12)
    np.testing.assert_allclose(affine_from_sitk(spacing, origin, direction), affine, atol=1e-12)


# -------------------------------------------------------------------- DICOM
def write_dicom_series(folder: Path, volume_kji: np.ndarray, slice_spacing: float) -> None:
    """One file per slice, as in SimpleITK's "DicomSeriesFromArray" example."""
    folder.mkdir()
    image = sitk.GetImageFromArray(volume_kji)
    image.SetSpacing([0.8, 0.9, slice_spacing])
    image.SetOrigin([10.0, -20.0, 30.0])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    stamp = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    direction = image.GetDirection()
    series_tags = [
        ("0008|0031", stamp[1]),
        ("0008|0021", stamp[0]),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125." + stamp[0] + ".1" + stamp[1]),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125." + stamp[0] + ".2" + stamp[1]),
        (
            "0020|0037",
            "\\".join(map(str, (*direction[0:7:3], *direction[1:8:3]))),
        ),
        ("0008|103e", "voxelflow test series"),
        ("0008|0060", "CT"),
    ]
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in series_tags:
            slice_image.SetMetaData(tag, value)
        slice_image.SetMetaData("0008|0012", stamp[0])
        slice_image.SetMetaData("0008|0013", stamp[1])
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, position)))
        slice_image.SetMetaData("0020|0013", str(k))
        slice_image.SetMetaData("0028|0030", "0.9\\0.8")  # row spacing \ column spacing
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    volume = rng.integers(0, 2000, size=(5, 6, 7)).astype(np.int16)  # (I, J, K)
    write_dicom_series(tmp_path / "series", volume.transpose(2, 1, 0), slice_spacing=2.5)
    image = tio.ScalarImage(tmp_path / "series")
    backend = image.dataobj
    assert isinstance(backend, SimpleITKBackend)
    assert image.shape == (1, 5, 6, 7)
    np.testing.assert_allclose(image.spacing, (0.8, 0.9, 2.5), rtol=1e-5)
    np.testing.assert_allclose(image.origin, (-10.0, 20.0, 30.0), atol=1e-4)  # LPS → RAS
    assert backend._volume is None  # the series' headers only
    assert backend.describe()["files"] == 7
    np.testing.assert_array_equal(image.numpy()[0], volume)
    np.testing.assert_array_equal(image[0, 1:3, ::-1, 4].numpy()[0], volume[1:3, ::-1, 4:5])
