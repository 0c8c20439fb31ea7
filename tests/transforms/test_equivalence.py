"""The patch-equals-whole checker itself: it passes exact lazy images and catches wrong ones."""

from __future__ import annotations

import pytest
import torch
from equivalence import check_lazy_transform, check_regions_match_whole, region_boxes

import voxelflow as tio
from voxelflow.transforms.lazy import Region, RegionMapBackend


def test_region_boxes_cover_corners_edges_faces_and_centre() -> None:
    boxes = region_boxes((10, 7, 1), (4, 4, 4))
    starts = {tuple(s.start for s in box) for box in boxes}
    assert starts == {(i, j, 0) for i in (0, 3, 6) for j in (0, 1, 3)}
    assert all(tuple(s.stop - s.start for s in box) == (4, 4, 1) for box in boxes)


def _global_index(data: torch.Tensor, region: Region) -> torch.Tensor:
    return data + region.indices()[0].to(data.dtype)[None, :, None, None]


def _local_index(data: torch.Tensor, region: Region) -> torch.Tensor:
    """A classic bug: uses the index within the region instead of within the volume."""
    return data + torch.arange(region.shape[0], dtype=data.dtype)[None, :, None, None]


def test_checker_passes_a_correct_region_function() -> None:
    image = tio.ScalarImage(torch.rand(1, 9, 6, 5))
    check_regions_match_whole(image.lazy_like(RegionMapBackend(image.dataobj, _global_index)))


def test_checker_catches_a_region_function_that_ignores_its_place() -> None:
    image = tio.ScalarImage(torch.rand(1, 9, 6, 5))
    wrong = image.lazy_like(RegionMapBackend(image.dataobj, _local_index))
    with pytest.raises(AssertionError):
        check_regions_match_whole(wrong)


def test_check_lazy_transform_on_crop_keeps_the_input_unloaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib
    import numpy as np

    path = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(np.random.rand(9, 8, 7).astype(np.float32), np.eye(4)), path)
    subject = tio.Subject(t1=tio.ScalarImage(path))
    out = check_lazy_transform(tio.Crop((1, 2, 0)), subject)
    assert out.spatial_shape == (7, 4, 7)
    assert not subject.t1.is_loaded
