"""GridSampler: the grid covers the volume, patches are read lazily as copies, validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import voxelflow as tio
from voxelflow.loader import SubjectsLoader
from voxelflow.patches.grid import grid_locations, grid_padding


def volume(shape=(1, 20, 17, 12), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def subject_of(tensor: torch.Tensor) -> tio.Subject:
    return tio.Subject(t1=tio.ScalarImage(tensor), seg=tio.LabelMap((tensor > 0.5).to(torch.uint8)))


def coverage(shape, locations) -> np.ndarray:
    count = np.zeros(shape, dtype=int)
    for location in locations:
        count[location.to_slices()] += 1
    return count


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 40)] * 3),
    patch=st.tuples(*[st.integers(1, 16)] * 3),
    data=st.data(),
)
def test_grid_covers_every_voxel_inside_the_volume(shape, patch, data):
    overlap = tuple(data.draw(st.integers(0, p - 1)) for p in patch)
    if any(p > s for p, s in zip(patch, shape, strict=True)):
        return
    locations = grid_locations(shape, patch, overlap)
    count = coverage(shape, locations)
    assert count.min() >= 1
    for location in locations:
        assert all(i >= 0 for i in location.index_ini)
        assert all(f <= s for f, s in zip(location.index_fin, shape, strict=True))
        assert location.size == patch
    ks = [location.index[2] for location in locations]
    assert ks == sorted(ks)  # k never decreases: the on-disk aggregator relies on it
    # neighbours overlap by at least the requested overlap, and the last patch is flush
    for axis in range(3):
        starts = sorted({location.index[axis] for location in locations})
        assert starts[0] == 0 and starts[-1] == shape[axis] - patch[axis]
        assert all(
            b - a <= patch[axis] - overlap[axis] for a, b in zip(starts, starts[1:], strict=False)
        )


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 30)] * 3),
    patch=st.tuples(*[st.integers(2, 16)] * 3),
    data=st.data(),
)
def test_padded_grid_covers_the_volume_even_when_patches_are_larger(shape, patch, data):
    overlap = tuple(data.draw(st.integers(0, p - 1)) for p in patch)
    padding = grid_padding(shape, patch, overlap)
    locations = grid_locations(shape, patch, overlap, padding)
    padded = tuple(s + b + a for s, (b, a) in zip(shape, padding, strict=True))
    count = np.zeros(padded, dtype=int)
    for location in locations:
        count[
            tuple(
                slice(i + b, f + b)
                for i, f, (b, _) in zip(
                    location.index_ini, location.index_fin, padding, strict=True
                )
            )
        ] += 1
    assert count.min() >= 1
    for location in locations:  # every patch touches the volume
        assert all(
            f > 0 and i < s
            for i, f, s in zip(location.index_ini, location.index_fin, shape, strict=True)
        )


def test_even_patch_equal_to_the_image_gives_one_patch():
    sampler = tio.GridSampler(subject_of(volume((1, 16, 16, 8))), patch_size=(16, 16, 8))
    assert len(sampler) == 1
    assert torch.equal(sampler[0].t1.data, sampler.subject.t1.data)


def test_patches_hold_the_right_values_and_metadata():
    tensor = volume()
    subject = tio.Subject(t1=tio.ScalarImage(tensor), age=42)
    sampler = tio.GridSampler(subject, patch_size=(8, 7, 6), patch_overlap=(2, 3, 1))
    for n, location in enumerate(sampler.locations):
        patch = sampler[n]
        assert patch["patch_location"] == location
        assert patch["age"] == 42
        assert torch.equal(patch.t1.data, tensor[(slice(None), *location.to_slices())])
    assert torch.equal(sampler[-1].t1.data, sampler[len(sampler) - 1].t1.data)
    with pytest.raises(IndexError, match="out of range"):
        sampler[len(sampler)]


def test_patch_affine_moves_to_the_patch_origin():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    subject = tio.Subject(t1=tio.ScalarImage(volume(), affine=affine))
    sampler = tio.GridSampler(subject, patch_size=8, patch_overlap=2)
    location = sampler.locations[5]
    expected = affine[:3, :3] @ np.asarray(location.index, dtype=float) + affine[:3, 3]
    np.testing.assert_allclose(sampler[5].t1.affine[:3, 3], expected)


def test_patches_are_copies_not_views():
    tensor = volume()
    sampler = tio.GridSampler(subject_of(tensor), patch_size=8)
    patch = sampler[0].t1.data
    assert patch.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    patch += 100
    assert tensor.max() <= 1


class RegionOnly:
    """A lazy array that refuses to be read whole and records the regions read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        region = self.array[key]
        if region.size == self.array.size:
            raise AssertionError("a whole-volume read on a lazy path")
        self.reads.append(key)
        return region


def test_patches_are_read_lazily_region_by_region(tmp_path):
    array = np.random.default_rng(0).random((24, 20, 16)).astype(np.float32)
    lazy = RegionOnly(array)
    (tmp_path / "volume.raw").write_bytes(b"")
    image = tio.ScalarImage(tmp_path / "volume.raw", reader=lambda path: (lazy, np.eye(4)))
    sampler = tio.GridSampler(tio.Subject(t1=image), patch_size=8, patch_overlap=0)
    assert not image.is_loaded
    values = [sampler[n].t1.data for n in range(len(sampler))]
    assert not image.is_loaded
    assert len(lazy.reads) == len(sampler) == 3 * 3 * 2
    rebuilt = np.zeros_like(array)
    for location, value in zip(sampler.locations, values, strict=True):
        rebuilt[location.to_slices()] = value[0].numpy()
    np.testing.assert_array_equal(rebuilt, array)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", 7.5])
def test_padded_patches_match_numpy_pad(mode):
    tensor = volume((1, 10, 9, 6))
    sampler = tio.GridSampler(
        subject_of(tensor), patch_size=(6, 6, 4), patch_overlap=(2, 3, 2), padding_mode=mode
    )
    padding = sampler.padding
    assert padding == ((1, 1), (1, 2), (1, 1))
    if isinstance(mode, float):
        padded = np.pad(tensor[0].numpy(), padding, mode="constant", constant_values=mode)
    else:
        padded = np.pad(tensor[0].numpy(), padding, mode=mode)
    assert any(min(location.index) < 0 for location in sampler.locations)
    for n, location in enumerate(sampler.locations):
        box = tuple(
            slice(i + b, f + b)
            for i, f, (b, _) in zip(location.index_ini, location.index_fin, padding, strict=True)
        )
        np.testing.assert_array_equal(sampler[n].t1.data[0].numpy(), padded[box])


def test_padding_lets_a_patch_larger_than_the_volume_through():
    tensor = volume((1, 5, 6, 7))
    sampler = tio.GridSampler(subject_of(tensor), patch_size=8, padding_mode="constant")
    assert len(sampler) == 1
    patch = sampler[0].t1.data
    assert patch.shape == (1, 8, 8, 8)
    assert patch.sum() == pytest.approx(tensor.sum().item(), rel=1e-5)


def test_sample_locations_drives_a_queue_reproducibly():
    subject = subject_of(volume())
    sampler = tio.GridSampler(patch_size=8, patch_overlap=2)  # no subject: a Queue drives it
    everything = sampler.sample_locations(subject)
    assert everything == tio.GridSampler(subject, patch_size=8, patch_overlap=2).locations
    first = sampler.sample_locations(subject, 5, torch.Generator().manual_seed(3))
    again = sampler.sample_locations(subject, 5, torch.Generator().manual_seed(3))
    other = sampler.sample_locations(subject, 5, torch.Generator().manual_seed(4))
    assert first == again and first != other
    assert len(set(first)) == 5 and set(first) <= set(everything)
    assert set(sampler.sample_locations(subject, len(everything))) == set(everything)
    patch = sampler.extract(subject, first[0])
    assert patch["patch_location"] == first[0]
    with pytest.raises(ValueError, match=f"has {len(everything)} patches"):
        sampler.sample_locations(subject, len(everything) + 1)
    with pytest.raises(TypeError, match="without a subject"):
        len(sampler)


def test_loader_with_workers_keeps_grid_order():
    tensor = volume()
    sampler = tio.GridSampler(subject_of(tensor), patch_size=8, patch_overlap=2)
    pickle.loads(pickle.dumps(sampler))
    seen = []
    for batch in SubjectsLoader(sampler, batch_size=3, num_workers=2):
        seen += batch.metadata["patch_location"]
        for n, location in enumerate(batch.metadata["patch_location"]):
            assert torch.equal(batch.t1.data[n], tensor[(slice(None), *location.to_slices())])
    assert seen == sampler.locations


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patch_size": 8, "patch_overlap": 8}, ValueError, "must be smaller than patch_size"),
        (
            {"patch_size": 8, "patch_overlap": (2, 9, 2)},
            ValueError,
            "must be smaller than patch_size",
        ),
        ({"patch_size": 8, "patch_overlap": -1}, ValueError, "non-negative"),
        ({"patch_size": 0}, ValueError, "positive"),
        ({"patch_size": (8, 8)}, ValueError, "three ints"),
        ({"patch_size": 32}, ValueError, "pass padding_mode= or a smaller patch_size"),
        ({"patch_size": 8, "padding_mode": "reflekt"}, ValueError, "Did you mean 'reflect'"),
        ({}, TypeError, "needs patch_size"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        tio.GridSampler(subject_of(volume()), **kwargs)


def test_error_names_the_file(tmp_path):
    import nibabel as nib

    path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), path)
    with pytest.raises(ValueError, match="brain.nii.gz: patch 16×16×16 does not fit"):
        tio.GridSampler(tio.Subject(t1=tio.ScalarImage(path)), patch_size=16)
