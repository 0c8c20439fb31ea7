"""Batches and loaders over lazy subjects, in the main process and in worker processes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow.loader import ImagesLoader, SubjectsLoader


@pytest.fixture
def subjects(tmp_path: Path, rng: np.random.Generator) -> list[tio.Subject]:
    """Four lazy subjects, each a 2-channel .nii, a .nii.gz label map and metadata."""
    out = []
    for n in range(4):
        t1 = rng.normal(size=(5, 6, 7, 2)).astype(np.float32)
        seg = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
        affine = np.diag([1.0 + n, 1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(t1, affine), tmp_path / f"t1_{n}.nii")
        nib.save(nib.Nifti1Image(seg, affine), tmp_path / f"seg_{n}.nii.gz")
        out.append(
            tio.Subject(
                t1=tio.ScalarImage(tmp_path / f"t1_{n}.nii"),
                seg=tio.LabelMap(tmp_path / f"seg_{n}.nii.gz"),
                index=n,
                location=tio.PatchLocation((n, 0, 0), (2, 2, 2)),
            )
        )
    return out


def expected_t1(subject: tio.Subject) -> np.ndarray:
    return np.moveaxis(np.asarray(nib.load(subject.t1.path).dataobj), -1, 0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_subjects_loader_stacks_values_and_metadata(
    subjects: list[tio.Subject], num_workers: int
) -> None:
    # Workers start with "spawn" so that they receive the subjects pickled (lazy images
    # with their backends), as they would on macOS/Windows or with forkserver.
    loader = SubjectsLoader(
        subjects,
        batch_size=2,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers else None,
    )
    batches = list(loader)
    assert [b.batch_size for b in batches] == [2, 2]
    for b, batch in enumerate(batches):
        group = subjects[2 * b : 2 * b + 2]
        assert batch.t1.data.shape == (2, 2, 5, 6, 7) and batch.t1.data.dtype == torch.float32
        np.testing.assert_array_equal(
            batch.t1.data.numpy(), np.stack([expected_t1(s) for s in group])
        )
        seg = np.stack([np.asarray(nib.load(s.seg.path).dataobj)[None] for s in group])
        assert batch.seg.data.dtype == torch.uint8
        np.testing.assert_array_equal(batch.seg.data.numpy(), seg)
        np.testing.assert_array_equal(batch.t1.affines[:, 0, 0], [1.0 + 2 * b, 2.0 + 2 * b])
        assert batch.metadata["index"] == [2 * b, 2 * b + 1]
        assert batch.metadata["location"] == [s.location for s in group]
        assert batch.t1.paths == [s.t1.path for s in group]
    assert not any(s.t1.is_loaded or s.seg.is_loaded for s in subjects)


@pytest.mark.timeout(120)
def test_loader_over_lazy_patches_in_workers(subjects: list[tio.Subject]) -> None:
    """Lazy slices (windows over file backends) cross the process boundary too."""
    patches = [s[1:4, ::-2, 2:5] for s in subjects]
    loader = SubjectsLoader(patches, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    (batch,) = list(loader)
    expected = np.stack([expected_t1(s)[:, 1:4, ::-2, 2:5] for s in subjects])
    np.testing.assert_array_equal(batch.t1.data.numpy(), expected)
    np.testing.assert_array_equal(batch.t1.affines, np.stack([p.t1.affine for p in patches]))


def test_images_loader_and_unbatch(subjects: list[tio.Subject]) -> None:
    images = [s.t1 for s in subjects]
    (batch,) = list(ImagesLoader(images, batch_size=4))
    assert isinstance(batch, tio.ImagesBatch) and batch.batch_size == len(batch) == 4
    back = batch.unbatch()
    for image, original in zip(back, images, strict=True):
        np.testing.assert_array_equal(image.numpy(), original.numpy())
        np.testing.assert_array_equal(image.affine, original.affine)


def test_subjects_batch_access_and_unbatch(subjects: list[tio.Subject]) -> None:
    batch = tio.SubjectsBatch.from_subjects(subjects)
    assert batch["t1"] is batch.t1 and batch["index"] == [0, 1, 2, 3]
    assert "seg" in batch and "index" in batch and "nope" not in batch
    with pytest.raises(KeyError, match=r"no entry 'segg'.*Did you mean 'seg'"):
        batch["segg"]
    moved = batch.to(torch.float64)
    assert moved.t1.data.dtype == torch.float64 and moved.metadata is batch.metadata
    again = batch.unbatch()
    assert [s.index for s in again] == [0, 1, 2, 3]
    np.testing.assert_array_equal(again[2].seg.numpy(), subjects[2].seg.numpy())
    assert type(again[2].seg) is tio.LabelMap


def test_batch_errors(subjects: list[tio.Subject]) -> None:
    with pytest.raises(ValueError, match="different shapes cannot be stacked"):
        tio.ImagesBatch.from_images([subjects[0].t1, subjects[1].t1[:, 1:]])
    with pytest.raises(ValueError, match="empty list"):
        tio.SubjectsBatch.from_subjects([])
    with pytest.raises(ValueError, match="different entries"):
        tio.SubjectsBatch.from_subjects([subjects[0], tio.Subject(t1=subjects[1].t1)])
