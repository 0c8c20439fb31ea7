"""Label transforms: values against NumPy/SciPy, labels stay labels, patches equal the whole."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from equivalence import check_lazy_transform

import voxelflow as tio


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.choice([0, 2, 5, 9], p=[0.5, 0.2, 0.2, 0.1], size=(1, 11, 10, 9)).astype(np.uint8)


@pytest.fixture
def subject(tmp_path: Path, labels: np.ndarray) -> tio.Subject:
    nib.save(nib.Nifti1Image(labels[0], np.eye(4)), tmp_path / "seg.nii")
    t1 = torch.rand(1, 11, 10, 9)
    return tio.Subject(t1=tio.ScalarImage(t1), seg=tio.LabelMap(tmp_path / "seg.nii"))


@pytest.mark.parametrize(
    "transform",
    [
        tio.OneHot(),
        tio.OneHot(num_classes=12),
        tio.RemapLabels({2: 1, 5: 300}),
        tio.RemoveLabels([5, 9]),
        tio.SequentialLabels(),
    ],
    ids=repr,
)
def test_lazy_label_transforms_patch_equals_whole(
    transform: tio.Transform, subject: tio.Subject
) -> None:
    out = check_lazy_transform(transform, subject, seed=0)  # label maps compared exactly
    assert not out.seg.dtype.is_floating_point
    assert out.t1 is subject.t1 or torch.equal(out.t1.data, subject.t1.data)


def test_one_hot(subject: tio.Subject, labels: np.ndarray) -> None:
    out = tio.OneHot()(subject)
    assert out.seg.shape == (10, 11, 10, 9) and out.seg.dtype == torch.uint8
    np.testing.assert_array_equal(
        out.seg.numpy(), (np.arange(10)[:, None, None, None] == labels[0])
    )
    back = out.apply_inverse_transform()
    np.testing.assert_array_equal(back.seg.numpy(), labels)
    assert back.seg.dtype == torch.uint8
    with pytest.raises(ValueError, match="not all integers in \\[0, 4\\].*num_classes > 9"):
        tio.OneHot(num_classes=5)(subject).seg.load()  # checked when the region is computed
    with pytest.raises(ValueError, match="single-channel"):
        tio.OneHot()(out)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        tio.OneHot(num_classes=0)


def test_remap_and_remove_labels(subject: tio.Subject, labels: np.ndarray) -> None:
    out = tio.RemapLabels({2: 1, 5: 300, 9: 2})(subject)
    expected = labels.astype(np.int64).copy()
    expected[labels == 2], expected[labels == 5], expected[labels == 9] = 1, 300, 2
    np.testing.assert_array_equal(out.seg.numpy(), expected)
    assert out.seg.dtype == torch.int16  # 300 does not fit in uint8
    np.testing.assert_array_equal(out.apply_inverse_transform().seg.numpy(), labels)
    merged = tio.RemapLabels({2: 0, 5: 0})(subject)
    with pytest.warns(UserWarning, match="merges labels"):
        kept = merged.apply_inverse_transform()
    np.testing.assert_array_equal(kept.seg.numpy(), np.where(np.isin(labels, [2, 5]), 0, labels))
    removed = tio.RemoveLabels([5, 9], background_label=2)(subject)
    np.testing.assert_array_equal(removed.seg.numpy(), np.where(np.isin(labels, [5, 9]), 2, labels))
    with pytest.raises(ValueError, match="appears twice"):
        tio.RemapLabels([(1, 2), (1, 3)])


def test_sequential_labels(subject: tio.Subject, labels: np.ndarray) -> None:
    out = tio.SequentialLabels()(subject)
    present = np.unique(labels)
    np.testing.assert_array_equal(out.seg.numpy(), np.searchsorted(present, labels))
    assert out.applied_transforms[0].params["remappings"]["seg"] == [[0, 0], [2, 1], [5, 2], [9, 3]]
    np.testing.assert_array_equal(out.apply_inverse_transform().seg.numpy(), labels)
    assert not subject.seg.is_loaded  # the label set came from a streaming pass


def _blobs() -> np.ndarray:
    seg = np.zeros((1, 12, 12, 6), dtype=np.int16)
    seg[0, 0:4, 0:4, 0:3] = 1  # 48 voxels: kept
    seg[0, 8:10, 8:10, 0:2] = 1  # 8 voxels: removed
    seg[0, 4, 4, 3] = 1  # touches the first blob by a corner only
    seg[0, 6:9, 0:2, 4:6] = 3  # 12 voxels, the only component of 3
    seg[0, 10:12, 0:2, 0:1] = 3  # 4 voxels, removed
    return seg


def test_keep_largest_component() -> None:
    seg = _blobs()
    image = tio.LabelMap(torch.from_numpy(seg))
    out = tio.KeepLargestComponent()(image).numpy()
    expected = seg.copy()
    expected[0, 8:10, 8:10, 0:2] = 0
    expected[0, 10:12, 0:2, 0:1] = 0
    np.testing.assert_array_equal(out, expected)  # 26-connected: the corner voxel stays
    faces = tio.KeepLargestComponent(fully_connected=False)(image).numpy()
    expected[0, 4, 4, 3] = 0
    np.testing.assert_array_equal(faces, expected)
    only_three = tio.KeepLargestComponent(labels=[3], background_label=7)(image).numpy()
    expected = seg.copy()
    expected[0, 10:12, 0:2, 0:1] = 7
    np.testing.assert_array_equal(only_three, expected)
    transform = tio.KeepLargestComponent()
    assert not transform.lazy and not transform.patchwise
    with pytest.raises(ValueError, match="single-channel"):
        transform(tio.LabelMap(torch.zeros(2, 3, 3, 3)))


def test_an_intensity_image_in_include_is_a_clear_error(subject: tio.Subject) -> None:
    with pytest.raises(TypeError, match="RemapLabels: 't1' is an intensity image.*include="):
        tio.RemapLabels({1: 2}, include=["t1"])(subject)
