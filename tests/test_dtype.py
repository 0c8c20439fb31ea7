"""The dtype policy: intensities read as float32, labels as integers, converted per region."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow.loader import SubjectsLoader


def _uint8_subject(tmp_path: Path, rng: np.random.Generator, suffix: str = ".nii") -> tio.Subject:
    t1 = rng.integers(0, 256, size=(24, 20, 18), dtype=np.uint8)
    seg = (t1 > 200).astype(np.uint8) + (t1 > 240)
    nib.save(nib.Nifti1Image(t1, np.eye(4)), tmp_path / f"t1{suffix}")
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / f"seg{suffix}")
    return tio.Subject(
        t1=tio.ScalarImage(tmp_path / f"t1{suffix}"), seg=tio.LabelMap(tmp_path / f"seg{suffix}")
    )


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nii.zarr"])
def test_the_readme_loop_runs_on_uint8_files(
    tmp_path: Path, rng: np.random.Generator, suffix: str
) -> None:
    """``model(batch.t1.data)`` on integer files: the README's loop, which used to fail with
    'Input type (unsigned char) and bias type (float)'."""
    source = _uint8_subject(tmp_path, rng)
    if suffix != ".nii":
        for name, image in source.images.items():
            image.save(tmp_path / f"{name}{suffix}")
        source = tio.Subject(
            t1=tio.ScalarImage(tmp_path / f"t1{suffix}"),
            seg=tio.LabelMap(tmp_path / f"seg{suffix}"),
        )
    assert source.t1.stored_dtype == torch.uint8 and source.t1.dtype == torch.float32
    assert source.seg.dtype == torch.uint8
    queue = tio.Queue(
        [source], tio.UniformSampler(patch_size=8), max_length=8, patches_per_volume=4, seed=0
    )
    model = torch.nn.Conv3d(1, 3, kernel_size=3, padding=1)
    for batch in SubjectsLoader(queue, batch_size=2):
        assert batch.t1.data.dtype == torch.float32 and batch.seg.data.dtype == torch.uint8
        loss = torch.nn.functional.cross_entropy(model(batch.t1.data), batch.seg.data[:, 0].long())
        loss.backward()
        for n, location in enumerate(batch.metadata["patch_location"]):
            stored = np.asarray(nib.load(tmp_path / "t1.nii").dataobj)[location.to_slices()]
            np.testing.assert_array_equal(batch.t1.data[n, 0].numpy(), stored.astype(np.float32))
    assert not source.t1.is_loaded


def test_conversion_is_per_region_read(strict_backend, tmp_path: Path, rng: np.random.Generator):
    """An int16 file read as float32 region by region: no whole read, values exact."""
    stored = rng.integers(-3000, 3000, size=(12, 11, 10, 2), dtype=np.int16)
    path = tmp_path / "volume.strict.nii"
    nib.save(nib.Nifti1Image(stored, np.eye(4)), path)
    image = tio.ScalarImage(path)
    assert (image.dtype, image.stored_dtype) == (torch.float32, torch.int16)
    assert image.memory == 2 * 12 * 11 * 10 * 4  # what data will take, from the header
    region = image[1, 2:9, ::3, -1]
    data = region.data
    assert data.dtype == torch.float32 and region.dtype == torch.float32
    np.testing.assert_array_equal(data[0, :, :, 0].numpy(), stored[2:9, ::3, -1, 1])
    assert strict_backend.log  # one region read, never the whole volume
    raw = image.read((slice(None), slice(0, 2)))
    assert raw.dtype == torch.float32 and not image.is_loaded
    assert image.dataobj[:, :2].dtype == torch.int16  # the backend reads stored values


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (np.uint8, torch.uint8),
        (np.int16, torch.int16),
        (np.uint16, torch.int32),
        (np.uint32, torch.int64),
        (np.int32, torch.int32),
        (np.float32, torch.int64),
        (np.float64, torch.int64),
    ],
)
def test_label_maps_read_as_integers(write_nifti, stored: type, expected: torch.dtype) -> None:
    values = np.array([[[0, 1], [2, 65000 if stored in (np.uint16, np.uint32) else 3]]])
    path = write_nifti(values.astype(stored), name=f"seg_{np.dtype(stored).name}.nii")
    label = tio.LabelMap(path)
    assert label.dtype == expected  # from the header, before reading
    assert label.data.dtype == expected
    np.testing.assert_array_equal(label.numpy()[0], values)
    intensity = tio.ScalarImage(path)
    assert intensity.dtype == torch.float32 and intensity.data.dtype == torch.float32


def test_fractional_labels_are_refused_with_the_fix(write_nifti) -> None:
    path = write_nifti(np.array([[[0.0, 0.5]]], np.float32), name="soft.nii")
    label = tio.LabelMap(path)
    with pytest.raises(tio.VoxelflowValueError, match=r"soft\.nii: a label map must hold whole"):
        label.load()
    assert not label.is_loaded
    kept = tio.LabelMap(path, dtype="stored")
    assert kept.data.dtype == torch.float32 and kept.data[0, 0, 0, 1] == 0.5
    nan = write_nifti(np.array([[[0.0, np.nan]]], np.float32), name="nan.nii")
    with pytest.raises(ValueError, match="whole numbers"):
        tio.LabelMap(nan).load()


def test_scaled_files_and_float64_read_as_float32(write_nifti) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    scaled = tio.ScalarImage(write_nifti(raw, name="scaled.nii", slope_inter=(0.5, -1.0)))
    assert scaled.stored_dtype == torch.float32 and scaled.dtype == torch.float32
    np.testing.assert_allclose(scaled.numpy()[0], raw * 0.5 - 1.0)
    double = write_nifti(np.linspace(0, 1, 24).reshape(2, 3, 4), name="double.nii")
    assert tio.ScalarImage(double).dtype == torch.float32
    assert tio.ScalarImage(double, dtype="stored").dtype == torch.float64
    assert tio.ScalarImage(double, dtype=torch.float16).data.dtype == torch.float16


def test_tensors_keep_their_dtype_unless_asked() -> None:
    tensor = torch.arange(8, dtype=torch.uint8).reshape(1, 2, 2, 2)
    image = tio.ScalarImage(tensor)
    assert image.data is tensor and image.dtype == torch.uint8
    converted = tio.ScalarImage(tensor, dtype=torch.float32)
    assert converted.data.dtype == torch.float32
    assert torch.equal(converted.data, tensor.float())
    with pytest.raises(TypeError, match="dtype='float16' is not a torch.dtype"):
        tio.ScalarImage(tensor, dtype="float16")  # type: ignore[arg-type]


def test_to_a_dtype_keeps_an_unloaded_image_unloaded(tmp_path, rng) -> None:
    subject = _uint8_subject(tmp_path, rng)
    image = subject.t1
    assert image.to(torch.float16) is image
    assert not image.is_loaded and image.dtype == torch.float16
    assert image[:, :4].data.dtype == torch.float16 and not image.is_loaded
    image.load()
    image.to(torch.float64)
    assert image.data.dtype == torch.float64
    image.unload()  # back to lazy, and still read as asked
    assert not image.is_loaded and image.data.dtype == torch.float64
    moved = image.to("cpu")
    assert moved is image and image.is_loaded and image.device == torch.device("cpu")
    np.testing.assert_array_equal(image.affine, np.eye(4))


def test_queue_memory_estimate_follows_the_policy(tmp_path, rng) -> None:
    subject = _uint8_subject(tmp_path, rng)
    # Patches wait in the buffer as stored (uint8: 1 byte) and leave it as data (float32).
    for workers, ahead in ((0, 0), (2, 4 * 8**3 * (4 + 1))):
        queue = tio.Queue(
            [subject], tio.UniformSampler(patch_size=8), max_length=10, num_workers=workers
        )
        assert queue.max_memory == 10 * 8**3 * (1 + 1) + ahead
        patches = list(queue)
        assert len(patches) == 10
        for patch in patches:
            assert patch.t1.data.dtype == torch.float32 and patch.seg.data.dtype == torch.uint8
            assert patch.t1.dtype == torch.float32 and "patch_location" in patch
        stored = np.asarray(nib.load(tmp_path / "t1.nii").dataobj)
        where = patches[0]["patch_location"].to_slices()
        np.testing.assert_array_equal(patches[0].t1.numpy()[0], stored[where].astype(np.float32))
    with_noise = tio.Queue(
        [subject], tio.UniformSampler(patch_size=8), max_length=10, transform=tio.Noise(std=0.1)
    )
    assert next(iter(with_noise)).t1.data.dtype == torch.float32


def test_a_whole_volume_transform_gives_the_patch_dtype(tmp_path, rng) -> None:
    """A transform on the lazy subject and the patch pipeline agree on the dtype."""
    subject = _uint8_subject(tmp_path, rng)
    flipped = tio.Flip(axes=(0,), p=1.0)(subject)
    assert flipped.t1.data.dtype == torch.float32 and flipped.seg.data.dtype == torch.uint8
    stored = np.asarray(nib.load(tmp_path / "t1.nii").dataobj)
    np.testing.assert_array_equal(flipped.t1.numpy()[0], stored[::-1].astype(np.float32))
    batch = tio.SubjectsBatch.from_subjects([subject, subject])
    assert batch.t1.data.dtype == torch.float32 and not subject.t1.is_loaded


def test_conversion_and_info_use_the_stored_dtype(tmp_path, rng) -> None:
    """A conversion writes stored values: uint8 stays uint8 (not the float32 of ``data``),
    and ``voxelflow info`` shows both types."""
    from voxelflow.cli.info import describe
    from voxelflow.convert import convert

    _uint8_subject(tmp_path, rng)
    convert(tmp_path / "t1.nii", tmp_path / "t1.nrrd", progress=False)
    back = tio.ScalarImage(tmp_path / "t1.nrrd")
    assert back.stored_dtype == torch.uint8 and back.dtype == torch.float32
    facts = describe(str(tmp_path / "t1.nii"))
    assert facts["dtype"] == "uint8" and facts["read as (ScalarImage)"] == "float32"
    assert facts["memory when loaded"] == "33.8 KiB"  # 24×20×18 float32 voxels
