"""Streaming reductions: ``reduce="argmax"`` / ``"max"`` equal reducing the full aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow.patches.grid import grid_locations, grid_padding


def scores_for(locations, channels: int, patch, seed: int = 0) -> torch.Tensor:
    """Random class scores per patch, so neighbouring patches disagree."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((len(locations), channels, *patch), generator=generator)


def fill(aggregator, locations, outputs, batch: int = 5) -> None:
    for start in range(0, len(locations), batch):
        aggregator.add_batch(outputs[start : start + batch], locations[start : start + batch])


CASES = [
    ((23, 17, 29), (8, 7, 9), (2, 3, 4), None),
    ((20, 16, 12), (8, 8, 8), (4, 4, 4), "constant"),
    ((9, 31, 40), (9, 10, 16), (0, 5, 6), None),
]


@pytest.mark.parametrize(("shape", "patch", "overlap", "padding"), CASES)
@pytest.mark.parametrize("mode", ["crop", "average", "hann", "gaussian"])
def test_streamed_argmax_and_max_equal_the_full_aggregation(
    shape, patch, overlap, padding, mode
) -> None:
    pad = grid_padding(shape, patch, overlap) if padding else None
    locations = grid_locations(shape, patch, overlap, pad)
    outputs = scores_for(locations, 7, patch)
    full = tio.PatchAggregator(shape, mode, patch_overlap=overlap)
    fill(full, locations, outputs)
    probabilities = full.get_output()
    for reduce in ("argmax", "max"):
        streamed = tio.PatchAggregator(shape, mode, patch_overlap=overlap, reduce=reduce)
        fill(streamed, locations, outputs)
        result = streamed.get_output()
        assert result.shape == (1, *shape)
        if reduce == "argmax":
            assert result.dtype == torch.uint8
            expected = probabilities.argmax(0, keepdim=True)
            # ties aside (random scores: none), every voxel agrees
            assert torch.equal(result.long(), expected)
        else:
            torch.testing.assert_close(result, probabilities.amax(0, keepdim=True))
    image = streamed.get_image()
    assert isinstance(image, tio.ScalarImage)


def test_argmax_image_is_a_label_map_and_memory_does_not_grow_with_depth() -> None:
    patch, overlap = (8, 8, 8), (2, 2, 2)
    bounds = {}
    for depth in (30, 90):
        shape = (16, 14, depth)
        locations = grid_locations(shape, patch, overlap)
        aggregator = tio.PatchAggregator(shape, "hann", patch_overlap=overlap, reduce="argmax")
        fill(aggregator, locations, scores_for(locations, 40, patch, seed=depth))
        image = aggregator.get_image()
        assert isinstance(image, tio.LabelMap) and image.shape == (1, *shape)
        # the sums in flight: at most a patch and two slabs deep, whatever the depth
        slabs = aggregator.memory_bound - image.data.nbytes
        assert slabs <= 40 * 16 * 14 * (8 + 2 * 8) * 4 * 2 + 2 * 16 * 14 * 8 * 40 * 4
        bounds[depth] = slabs
    assert bounds[30] == bounds[90]


def test_many_classes_on_disk(tmp_path) -> None:
    shape, patch, overlap = (12, 10, 24), (6, 5, 8), (2, 1, 3)
    locations = grid_locations(shape, patch, overlap)
    outputs = scores_for(locations, 300, patch)  # more than 256 classes: int16 labels
    full = tio.PatchAggregator(shape, "gaussian", patch_overlap=overlap)
    fill(full, locations, outputs)
    expected = full.get_output().argmax(0, keepdim=True)
    path = tmp_path / "labels.nii.zarr"
    with tio.PatchAggregator(
        shape, "gaussian", patch_overlap=overlap, on_disk=path, reduce="argmax", chunks=8
    ) as aggregator:
        fill(aggregator, locations, outputs)
    labels = tio.LabelMap(path)
    assert labels.dtype == torch.int16
    assert torch.equal(labels.data.long(), expected)


def test_reductions_need_grid_order_and_refuse_bad_options() -> None:
    shape, patch, overlap = (8, 8, 24), (8, 8, 8), (0, 0, 0)
    locations = grid_locations(shape, patch, overlap)
    aggregator = tio.PatchAggregator(shape, "average", reduce="argmax")
    outputs = scores_for(locations, 3, patch)
    aggregator.add_batch(outputs[:1], locations[:1])
    with pytest.raises(ValueError, match="grid order"):  # skips k = 8..16
        aggregator.add_batch(outputs[2:], locations[2:])
    with pytest.raises(ValueError, match="reduce='median' is not one of"):
        tio.PatchAggregator(shape, reduce="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="disagree"):
        tio.PatchAggregator(shape, reduce="max", argmax=True, on_disk="x.nii.zarr")


def test_streamed_float16_scores_do_not_underflow() -> None:
    shape, patch, overlap = (24, 20, 18), (12, 10, 9), (4, 4, 3)
    locations = grid_locations(shape, patch, overlap)
    outputs = scores_for(locations, 5, patch)
    full = tio.PatchAggregator(shape, "gaussian", patch_overlap=overlap, dtype=torch.float64)
    fill(full, locations, outputs.double())
    half = tio.PatchAggregator(
        shape, "gaussian", patch_overlap=overlap, dtype=torch.float16, reduce="max"
    )
    fill(half, locations, outputs)
    np.testing.assert_allclose(
        half.get_output().double().numpy(),
        full.get_output().amax(0, keepdim=True).numpy(),
        rtol=2e-3,
    )


@pytest.mark.parametrize(("shape", "patch", "overlap", "padding"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_grid_order_blending_equals_the_whole_output_blend(shape, patch, overlap, padding, dtype):
    """Slabs blended as the grid passes them (summed into the output itself for float32)."""
    pad = grid_padding(shape, patch, overlap) if padding else None
    locations = grid_locations(shape, patch, overlap, pad)
    outputs = scores_for(locations, 3, patch)
    for mode in ("crop", "average", "hann", "gaussian"):
        full = tio.PatchAggregator(shape, mode, patch_overlap=overlap, dtype=dtype)
        fill(full, locations, outputs)
        streamed = tio.PatchAggregator(
            shape, mode, patch_overlap=overlap, dtype=dtype, grid_order=True
        )
        fill(streamed, locations, outputs)
        tolerance = 1e-6 if dtype == torch.float32 else 2e-3
        torch.testing.assert_close(
            streamed.get_output(), full.get_output(), rtol=tolerance, atol=tolerance
        )
