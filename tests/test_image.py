"""``Image``: sources, header-only opening, lazy slicing, caching, nibabel's memory
controls, saving, and pickling."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import voxelflow as tio
from conftest import WholeReadError, assert_affine_follows, nifti_to_cijk, random_affine


@pytest.fixture
def volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (I, J, K, C) float32 NIfTI array and a non-trivial affine."""
    return rng.normal(size=(8, 9, 10, 3)).astype(np.float32), random_affine(rng)


@pytest.fixture
def nii(tmp_path: Path, volume: tuple[np.ndarray, np.ndarray]) -> Path:
    array, affine = volume
    path = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


# ---------------------------------------------------------------- sources
@pytest.mark.parametrize("as_type", [str, Path])
def test_path_source_header_properties(
    nii: Path, volume: tuple[np.ndarray, np.ndarray], as_type: type
) -> None:
    array, affine = volume
    image = tio.ScalarImage(as_type(nii))
    assert image.path == nii
    assert image.shape == (3, 8, 9, 10)
    assert image.spatial_shape == (8, 9, 10)
    assert image.num_channels == 3
    assert image.dtype == torch.float32
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    assert image.affine.dtype == np.float64 and image.affine.shape == (4, 4)
    np.testing.assert_allclose(image.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)
    np.testing.assert_allclose(image.origin, affine[:3, 3], atol=1e-5)
    assert image.memory == 3 * 8 * 9 * 10 * 4
    assert not image.is_loaded
    np.testing.assert_array_equal(image.numpy(), nifti_to_cijk(array))


def test_opening_reads_nothing(strict_file: Any, strict_backend: Any) -> None:
    path, expected, affine = strict_file
    image = tio.ScalarImage(path)
    assert image._backend is None  # not even the header until asked
    assert (image.shape, image.spatial_shape, image.num_channels) == (
        expected.shape,
        expected.shape[1:],
        expected.shape[0],
    )
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    assert image.spacing and image.origin and image.dtype == torch.float32
    assert "lazy" in repr(image)
    assert not image.is_loaded and not strict_backend.log  # no voxel was read


@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_tensor_and_array_sources(kind: str, rng: np.random.Generator) -> None:
    data = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    affine = random_affine(rng)
    source = torch.from_numpy(data) if kind == "tensor" else data
    image = tio.LabelMap(source, affine=torch.from_numpy(affine))
    assert image.is_loaded and image.in_memory
    assert image.shape == (2, 4, 5, 6) and image.path is None
    assert image.type == tio.LABEL
    np.testing.assert_array_equal(image.numpy(), data)
    np.testing.assert_array_equal(image.affine, affine)
    assert image.dtype == torch.float32
    # Identity affine by default, and tensor= / path= keywords (TorchIO's names).
    np.testing.assert_array_equal(tio.ScalarImage(tensor=source).affine, np.eye(4))


def test_big_endian_array_source() -> None:
    data = np.arange(24, dtype=">i2").reshape(1, 2, 3, 4)
    image = tio.ScalarImage(data)
    assert image.dtype == torch.int16
    np.testing.assert_array_equal(image.numpy(), data.astype(np.int16))


def test_nibabel_proxy_image_stays_lazy(strict_file: Any, strict_backend: Any) -> None:
    path, expected, affine = strict_file
    proxy_image = nib.load(path)
    image = tio.ScalarImage(proxy_image)
    assert not image.is_loaded and image.path == path
    assert image.shape == expected.shape
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    region = image[:, 2:5, 1:3, 7]
    np.testing.assert_array_equal(region.numpy(), expected[:, 2:5, 1:3, 7:8])
    assert strict_backend.log  # read through the (strict) file backend, by region
    assert not proxy_image.in_memory  # nibabel's image was not loaded either
    with pytest.raises(WholeReadError):
        image.data  # noqa: B018


@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_nibabel_in_memory_image(ndim: int, rng: np.random.Generator) -> None:
    shape = {3: (4, 5, 6), 4: (4, 5, 6, 3), 5: (4, 5, 6, 1, 2)}[ndim]
    array = rng.normal(size=shape).astype(np.float32)
    affine = random_affine(rng)
    image = tio.ScalarImage(nib.Nifti1Image(array, affine))
    assert not image.is_loaded  # lazy through its dataobj, as a file image is
    expected = nifti_to_cijk(array)
    np.testing.assert_array_equal(image.read((slice(None), 1, slice(2, 5))), expected[:, 1:2, 2:5])
    assert not image.is_loaded
    np.testing.assert_array_equal(image.numpy(), expected)
    assert image.is_loaded
    np.testing.assert_array_equal(image.affine, affine)
    image.unload()
    assert not image.is_loaded  # and back to lazy: the array is still there to read


def test_unsupported_source_type() -> None:
    with pytest.raises(tio.VoxelflowTypeError, match="unsupported source of type int"):
        tio.ScalarImage(3)
    with pytest.raises(TypeError, match="exactly one"):
        tio.ScalarImage()


def test_affine_argument_overrides_file(nii: Path) -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    image = tio.ScalarImage(nii, affine=affine)
    np.testing.assert_array_equal(image.affine, affine)
    assert image.spacing == (2.0, 3.0, 4.0)
    np.testing.assert_array_equal(image[:, 1:, 2:, 3:].origin, (2.0, 6.0, 12.0))


# ---------------------------------------------------------------- slicing
def test_slice_is_lazy_same_class_and_moves_affine(strict_file: Any, strict_backend: Any) -> None:
    path, expected, affine = strict_file
    for cls in (tio.ScalarImage, tio.LabelMap):
        image = cls(path, subject_id="s1", dtype="stored")  # the file holds random floats
        strict_backend.log.clear()
        region = image[1:, 2:7:2, ::-1, 3]
        assert type(region) is cls and region.type == image.type
        assert region.metadata == {"subject_id": "s1"}
        assert not region.is_loaded and not image.is_loaded
        assert region.shape == (1, 3, 10, 1)
        assert not strict_backend.log  # slicing read nothing
        np.testing.assert_array_equal(region.data.numpy(), expected[1:, 2:7:2, ::-1, 3:4])
        assert region.is_loaded and not image.is_loaded
        # One region read: the positive-step box, channels 1:2, i 2:7:2, all j, k 3.
        assert strict_backend.log == [
            (slice(1, 2, 1), slice(2, 7, 2), slice(0, 10, 1), slice(3, 4, 1))
        ]
        assert_affine_follows(region, affine, [np.arange(9)[2:7:2], np.arange(10)[::-1], [3]])
        np.testing.assert_allclose(region.spacing[0], 2 * image.spacing[0])


def test_slicing_never_reads_whole(strict_file: Any, strict_backend: Any) -> None:
    path, expected, _ = strict_file
    image = tio.ScalarImage(path)
    image.shape, image.affine, image.dtype, image.spacing, image.origin  # noqa: B018
    np.testing.assert_array_equal(
        image.dataobj[0, 1:3, -1, ::4].numpy(), expected[0:1, 1:3, -1:, ::4]
    )
    np.testing.assert_array_equal(image[..., 1:].data.numpy(), expected[..., 1:])
    np.testing.assert_array_equal(image[:, 2:][:, 1:][:, ::-1].numpy(), expected[:, 3:][:, ::-1])
    assert len(strict_backend.log) == 3
    assert not image.is_loaded
    with pytest.raises(WholeReadError):
        image.data  # noqa: B018
    with pytest.raises(WholeReadError):
        image[...].data  # noqa: B018  (the whole region is a whole read)


def test_slicing_a_loaded_image_copies(nii: Path, volume: Any) -> None:
    image = tio.ScalarImage(nii)
    image.load()
    region = image[:, 1:3, ::-2]
    assert region.is_loaded
    region.data.zero_()
    np.testing.assert_array_equal(image.numpy(), nifti_to_cijk(volume[0]))  # untouched


def test_slicing_errors_name_the_file(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    with pytest.raises(tio.VoxelflowIndexError, match=r"volume\.nii: index 8 is out of range"):
        image[0, 8]
    with pytest.raises(IndexError, match="out of range for axis channel with size 3"):
        image[-4]
    with pytest.raises(tio.VoxelflowTypeError, match="volume.nii.*not supported"):
        image[:, [0, 1]]
    with pytest.raises(TypeError, match="not supported"):
        image[:, np.arange(8) > 3]
    with pytest.raises(IndexError, match="single ellipsis"):
        image[..., ...]
    with pytest.raises(IndexError, match="too many indices"):
        image[0, 0, 0, 0, 0]


# ---------------------------------------------------------------- data and caching
def test_data_loads_and_caches(nii: Path, volume: Any) -> None:
    image = tio.ScalarImage(nii)
    assert not image.is_loaded and not image.in_memory
    data = image.data
    assert image.is_loaded and image.in_memory
    assert image.data is data and image.tensor is data
    np.testing.assert_array_equal(data.numpy(), nifti_to_cijk(volume[0]))
    image.unload()
    assert not image.is_loaded
    again = image.data
    assert again is not data
    torch.testing.assert_close(again, data)


def test_load_unload_and_uncache(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    image.load()
    assert image.is_loaded
    image.load()  # no-op
    image.uncache()
    assert not image.is_loaded
    tensor_image = tio.ScalarImage(torch.ones(1, 2, 2, 2))
    tensor = tensor_image.data
    tensor_image.unload()  # nothing to reload from: keeps its data
    assert tensor_image.is_loaded and tensor_image.data is tensor


def test_set_data_makes_an_in_memory_image(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    image.data = torch.zeros(2, 3, 4, 5)
    assert image.shape == (2, 3, 4, 5)
    image.unload()
    assert image.is_loaded and float(image.data.sum()) == 0


def test_new_like_keeps_class_metadata_and_affine(nii: Path) -> None:
    image = tio.LabelMap(nii, name="seg")
    new = image.new_like(torch.ones(1, 2, 2, 2, dtype=torch.uint8))
    assert type(new) is tio.LabelMap and new.metadata == {"name": "seg"}
    np.testing.assert_array_equal(new.affine, image.affine)
    assert new.dtype == torch.uint8 and new.is_loaded


# ---------------------------------------------------------------- nibabel's names
def test_get_fdata_fill_caches_like_nibabel(nii: Path, volume: Any) -> None:
    image = tio.ScalarImage(nii)
    data = image.get_fdata()  # caching="fill" by default
    assert isinstance(data, np.ndarray) and data.dtype == np.float64
    assert data.shape == (3, 8, 9, 10)
    np.testing.assert_array_equal(data, nifti_to_cijk(volume[0]).astype(np.float64))
    assert image.in_memory
    assert image.get_fdata() is data
    assert image.get_fdata(caching="unchanged") is data  # a full cache stays full
    assert image.in_memory
    image.uncache()
    assert not image.in_memory
    assert image.get_fdata() is not data


def test_get_fdata_modifications_survive_until_uncache(nii: Path) -> None:
    """nibabel's page: changes to the cached array show until ``uncache()``."""
    image = tio.ScalarImage(nii)
    data = image.get_fdata()
    original = data[0, 0, 0, 0]
    data[0, 0, 0, 0] = 99
    assert image.get_fdata()[0, 0, 0, 0] == 99
    image.uncache()
    assert image.get_fdata()[0, 0, 0, 0] == original


def test_get_fdata_unchanged_leaves_unloaded(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    first = image.get_fdata(caching="unchanged")
    assert not image.in_memory
    second = image.get_fdata(caching="unchanged")
    assert second is not first
    np.testing.assert_array_equal(first, second)


def test_get_fdata_dtype_and_bad_options(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    data32 = image.get_fdata(dtype=np.float32)
    assert data32.dtype == np.float32
    assert image.get_fdata(dtype=np.float32) is data32
    assert image.get_fdata().dtype == np.float64
    with pytest.raises(ValueError, match=r"caching='fil' is not one of .*Did you mean 'fill'"):
        image.get_fdata(caching="fil")  # type: ignore[arg-type]
    with pytest.raises(tio.VoxelflowValueError, match="floating type"):
        image.get_fdata(dtype=np.int16)


def test_asarray_dataobj_reads_without_caching(nii: Path, volume: Any) -> None:
    image = tio.ScalarImage(nii)
    array = np.asarray(image.dataobj)
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, nifti_to_cijk(volume[0]))
    assert not image.in_memory
    region = image.dataobj[1, 2:4]
    assert isinstance(region, torch.Tensor) and region.shape == (1, 2, 9, 10)
    assert not image.in_memory
    assert np.asarray(image.dataobj, dtype=np.float64).dtype == np.float64
    assert np.asarray(image).shape == (3, 8, 9, 10)


def test_in_memory_array_image(rng: np.random.Generator) -> None:
    image = tio.ScalarImage(rng.normal(size=(1, 3, 4, 5)))
    assert image.in_memory
    image.uncache()  # no effect on an array image
    assert image.in_memory
    np.testing.assert_array_equal(np.asarray(image.dataobj), image.numpy())


# ---------------------------------------------------------------- saving
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("channels", [1, 3])
def test_save_round_trip(
    tmp_path: Path, rng: np.random.Generator, suffix: str, channels: int
) -> None:
    data = rng.normal(size=(channels, 5, 6, 7)).astype(np.float32)
    affine = random_affine(rng)
    source = tmp_path / "source.nii"
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), affine), source)
    image = tio.ScalarImage(source)
    out = tmp_path / f"out{suffix}"
    image.save(out)
    assert not image.is_loaded  # saving a lazy image does not cache it
    back = tio.ScalarImage(out)
    assert back.shape == data.shape
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    # The written file is what nibabel / SimpleITK read too.
    if suffix.startswith(".nii"):
        loaded = nib.load(out)
        np.testing.assert_array_equal(nifti_to_cijk(np.asarray(loaded.dataobj)), data)
        np.testing.assert_allclose(loaded.affine, affine, atol=1e-5)
    else:
        itk = sitk.ReadImage(str(out))
        array = sitk.GetArrayFromImage(itk)  # (K, J, I[, C])
        array = array[..., None] if channels == 1 else array
        np.testing.assert_array_equal(array.transpose(3, 2, 1, 0), data)


def test_save_a_slice_and_a_label_map(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = rng.integers(0, 4, size=(1, 6, 7, 8)).astype(np.uint8)
    affine = random_affine(rng)
    image = tio.LabelMap(torch.from_numpy(labels), affine=affine)
    image.save(tmp_path / "labels.nii.gz")
    on_disk = tio.LabelMap(tmp_path / "labels.nii.gz")
    assert on_disk.dtype == torch.uint8
    region = on_disk[:, 1:5, ::-2, 3:]
    region.save(tmp_path / "region.nii")
    back = nib.load(tmp_path / "region.nii")
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels[0, 1:5, ::-2, 3:])
    assert_affine_follows(
        tio.LabelMap(tmp_path / "region.nii"),
        affine,
        [np.arange(1, 5), np.arange(7)[::-2], np.arange(3, 8)],
    )


def test_save_options(tmp_path: Path) -> None:
    image = tio.ScalarImage(torch.arange(8.0).reshape(1, 2, 2, 2))
    image.save(tmp_path / "as_int.nii", dtype=np.int16)
    assert nib.load(tmp_path / "as_int.nii").get_data_dtype() == np.int16
    with pytest.raises(tio.VoxelflowValueError, match=r"x\.nii: unknown NIfTI save option"):
        image.save(tmp_path / "x.nii", compression=True)
    with pytest.raises(ValueError, match="unknown option"):
        image.save(tmp_path / "x.nrrd", dtype=np.int16)
    assert not (tmp_path / "x.nii").exists() and not (tmp_path / "x.nrrd").exists()


# ---------------------------------------------------------------- pickling
def _roundtrip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_pickle_lazy_images(tmp_path: Path, volume: Any, suffix: str) -> None:
    array, affine = volume
    path = tmp_path / f"v{suffix}"
    nib.save(nib.Nifti1Image(array, affine), path)
    expected = nifti_to_cijk(array)

    unopened = tio.ScalarImage(path, tag=1)
    copy = _roundtrip(unopened)
    assert not copy.is_loaded and copy.metadata == {"tag": 1}
    np.testing.assert_array_equal(copy.numpy(), expected)

    opened = tio.ScalarImage(path)
    opened.dataobj[:, 0, 0, 0]  # opens the backend (and, for .nii, maps the file)
    payload = pickle.dumps(opened)
    assert len(payload) < array.nbytes / 2  # no voxel data travels
    copy = pickle.loads(payload)
    assert not copy.is_loaded
    np.testing.assert_array_equal(copy.dataobj[:, 2:4].numpy(), expected[:, 2:4])

    region = opened[1:, ::-1, 3]
    copy = _roundtrip(region)
    assert not copy.is_loaded and type(copy) is tio.ScalarImage
    np.testing.assert_array_equal(copy.numpy(), expected[1:, ::-1, 3:4])
    np.testing.assert_array_equal(copy.affine, region.affine)

    opened.load()
    copy = _roundtrip(opened)
    assert copy.is_loaded
    np.testing.assert_array_equal(copy.numpy(), expected)


def test_pickled_nifti_backend_has_no_memmap(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    image.dataobj[:, 0]
    assert isinstance(image.dataobj._memmap, np.memmap)  # type: ignore[attr-defined]
    copy = _roundtrip(image.dataobj)
    assert copy._memmap is None
    assert image.dataobj._memmap is not None  # type: ignore[attr-defined]  (the original keeps its map)
    torch.testing.assert_close(copy[:, 1:3], image.dataobj[:, 1:3])


def test_repr(nii: Path) -> None:
    image = tio.ScalarImage(nii)
    text = repr(image)
    assert text.startswith("ScalarImage(shape: (3, 8, 9, 10)") and "lazy" in text
    assert "volume.nii" in text and "float32" in text
    image.load()
    assert "lazy" not in repr(image)
