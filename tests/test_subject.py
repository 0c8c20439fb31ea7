"""``Subject``: entries, metadata, checked spatial shape, lazy spatial slicing, copies."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from conftest import WholeReadError, assert_affine_follows, random_affine


@pytest.fixture
def subject(tmp_path: Path, rng: np.random.Generator) -> tio.Subject:
    t1 = rng.normal(size=(6, 7, 8)).astype(np.float32)
    seg = rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint8)
    affine = random_affine(rng)
    nib.save(nib.Nifti1Image(t1, affine), tmp_path / "t1.nii")
    nib.save(nib.Nifti1Image(seg, affine), tmp_path / "seg.nii.gz")
    return tio.Subject(
        t1=tio.ScalarImage(tmp_path / "t1.nii"),
        seg=tio.LabelMap(tmp_path / "seg.nii.gz"),
        age=42,
        name="sub-01",
    )


def test_entries_by_attribute_and_key(subject: tio.Subject) -> None:
    assert subject.t1 is subject["t1"]
    assert subject.age == 42 and subject["name"] == "sub-01"
    assert set(subject.images) == {"t1", "seg"}
    assert list(subject.get_images_dict()) == ["t1"]  # intensity only by default
    assert list(subject.get_images_dict(intensity_only=False, exclude=["t1"])) == ["seg"]
    assert subject.get_images(intensity_only=False, include=["seg"]) == [subject.seg]
    assert subject.metadata == {"age": 42, "name": "sub-01"}
    assert subject.spatial_shape == (6, 7, 8) and subject.shape == (1, 6, 7, 8)
    assert not subject.is_loaded


def test_unknown_entry_errors(subject: tio.Subject) -> None:
    with pytest.raises(KeyError, match=r"no entry 'seq'.*Did you mean 'seg'"):
        subject["seq"]
    with pytest.raises(
        AttributeError, match="no entry or attribute 'flair'; entries: t1, seg, age, name"
    ):
        subject.flair  # noqa: B018


def test_dict_argument_and_bad_keys() -> None:
    image = tio.ScalarImage(torch.zeros(1, 2, 2, 2))
    assert tio.Subject({"a": image}, b=1)["b"] == 1
    with pytest.raises(TypeError, match="keys must be strings"):
        tio.Subject({1: image})


def test_spatial_shape_mismatch_names_the_images() -> None:
    subject = tio.Subject(
        t1=tio.ScalarImage(torch.zeros(1, 4, 4, 4)), t2=tio.ScalarImage(torch.zeros(1, 4, 4, 5))
    )
    with pytest.raises(tio.VoxelflowValueError, match=r"t1: \(4, 4, 4\); t2: \(4, 4, 5\)"):
        subject.spatial_shape  # noqa: B018
    with pytest.raises(ValueError, match="disagree on spatial_shape"):
        subject.check_consistent_space()
    with pytest.raises(ValueError, match=r"at least one image \(got only: age\)"):
        tio.Subject(age=3)


def test_spatial_slicing_every_image_lazily(subject: tio.Subject) -> None:
    t1 = nib.load(subject.t1.path).get_fdata(dtype=np.float32)
    seg = np.asarray(nib.load(subject.seg.path).dataobj)
    region = subject[1:5, ::-2, 3]
    assert isinstance(region, tio.Subject) and region is not subject
    assert region.spatial_shape == (4, 4, 1)
    assert region.age == 42 and region["name"] == "sub-01"
    assert type(region.t1) is tio.ScalarImage and type(region.seg) is tio.LabelMap
    assert not region.t1.is_loaded and not region.seg.is_loaded
    np.testing.assert_array_equal(region.t1.numpy()[0], t1[1:5, ::-2, 3:4])
    np.testing.assert_array_equal(region.seg.numpy()[0], seg[1:5, ::-2, 3:4])
    assert not subject.t1.is_loaded and not subject.seg.is_loaded
    assert_affine_follows(region.t1, subject.t1.affine, [np.arange(1, 5), np.arange(7)[::-2], [3]])
    np.testing.assert_array_equal(region.t1.affine, region.seg.affine)
    # An ellipsis and a single index work; more than three spatial indices do not.
    assert subject[..., 2:4].spatial_shape == (6, 7, 2)
    assert subject[2].spatial_shape == (1, 7, 8)
    with pytest.raises(ValueError, match="at most 3 spatial indices"):
        subject[0, 0, 0, 0]
    with pytest.raises(IndexError, match="out of range"):
        subject[6]


def test_subject_slicing_never_reads_whole(strict_file: Any, strict_backend: Any) -> None:
    path, expected, _ = strict_file
    subject = tio.Subject(a=tio.ScalarImage(path), b=tio.LabelMap(path, dtype="stored"))
    region = subject[2:5, 1:, ::3]
    for name in ("a", "b"):
        np.testing.assert_array_equal(region[name].data.numpy(), expected[:, 2:5, 1:, ::3])
    assert len(strict_backend.log) == 2
    with pytest.raises(WholeReadError):
        subject.load()


def test_load_unload(subject: tio.Subject) -> None:
    subject.load()
    assert subject.is_loaded and subject.t1.is_loaded and subject.seg.is_loaded
    subject.unload()
    assert not subject.t1.is_loaded and not subject.seg.is_loaded


def test_copy_is_shallow_and_independent(subject: tio.Subject) -> None:
    for duplicate in (subject.copy(), copy.copy(subject)):
        assert isinstance(duplicate, tio.Subject) and duplicate is not subject
        assert duplicate.t1 is subject.t1
        duplicate["age"] = 7
        assert subject.age == 42
    deep = copy.deepcopy(subject)
    assert deep.t1 is not subject.t1
    np.testing.assert_array_equal(deep.t1.numpy(), subject.t1.numpy())


def test_pickle_lazy_and_loaded_subjects(subject: tio.Subject) -> None:
    lazy = pickle.loads(pickle.dumps(subject[1:3]))
    assert isinstance(lazy, tio.Subject) and not lazy.t1.is_loaded and lazy.age == 42
    np.testing.assert_array_equal(lazy.t1.numpy(), subject.t1[:, 1:3].numpy())
    subject.load()
    loaded = pickle.loads(pickle.dumps(subject))
    assert loaded.is_loaded
    np.testing.assert_array_equal(loaded.seg.numpy(), subject.seg.numpy())
