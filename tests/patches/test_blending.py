"""Exact blending: relative weights kept everywhere, against a per-voxel reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import voxelflow as tio
from voxelflow.patches.grid import grid_locations


def window_1d(name: str, n: int, floor: float = 0.0) -> np.ndarray:
    """The 1-D windows, written out here independently of the library."""
    x = np.arange(n) + 0.5
    if name == "hann":
        w = np.sin(np.pi * x / n) ** 2
    else:
        w = np.exp(-((x - n / 2) ** 2) / (2 * (n / 8) ** 2))
    return np.maximum(w / w.max(), floor)


def reference_blend(
    shape: tuple[int, int, int],
    locations: list[tio.PatchLocation],
    outputs: np.ndarray,
    mode: str,
    floor: float = 0.0,
) -> np.ndarray:
    """For every voxel, Σ w_p(x) out_p(x) / Σ w_p(x) in float64, voxel by voxel of each patch.

    With ``floor`` the windows are floored as the first version did (each 1-D window and
    their product at ``floor`` of the peak).
    """
    sums = np.zeros((outputs.shape[1], *shape))
    weights = np.zeros(shape)
    for location, out in zip(locations, outputs, strict=True):
        wi, wj, wk = (window_1d(mode, n, floor) for n in location.size)
        window = np.maximum(wi[:, None, None] * wj[None, :, None] * wk[None, None, :], floor)
        box = location.to_slices()
        sums[(slice(None), *box)] += window * out
        weights[box] += window
    return sums / weights


def aggregate(shape, locations, outputs, mode, overlap, dtype=torch.float32, batch=4):
    aggregator = tio.PatchAggregator(shape, mode, patch_overlap=overlap, dtype=dtype)
    for start in range(0, len(locations), batch):
        aggregator.add_batch(
            torch.from_numpy(outputs[start : start + batch]), locations[start : start + batch]
        )
    return aggregator.get_output().double().numpy()


def test_fully_convolutional_network_of_the_issue() -> None:
    """112×100×88, patch 32, overlap 8, a 3³ receptive field: each weighted mode equals the
    per-voxel reference blend; the floored windows miss it by far more than the bound, and
    the exact blend is close to a whole-volume pass."""
    torch.manual_seed(0)
    net = nn.Conv3d(1, 1, 3, padding=1).double().eval()
    volume = torch.rand(1, 1, 112, 100, 88, dtype=torch.float64)
    shape = (112, 100, 88)
    locations = grid_locations(shape, (32,) * 3, (8,) * 3)
    with torch.no_grad():
        whole = net(volume)[0].numpy()
        inputs = torch.stack([volume[0][(slice(None), *loc.to_slices())] for loc in locations])
        outputs = net(inputs).numpy()
    for mode, whole_bound in (("hann", 0.03), ("gaussian", 0.01)):
        expected = reference_blend(shape, locations, outputs, mode)
        floored = reference_blend(shape, locations, outputs, mode, floor=1e-3)
        ours = aggregate(shape, locations, outputs.astype(np.float32), mode, 8)
        error = np.abs(ours - expected).max()
        assert error < 1e-5, (mode, error)
        assert np.abs(floored - expected).max() > 100 * 1e-5  # the floor fails the bound
        assert np.abs(ours - whole).max() < whole_bound
        assert np.abs(floored - whole).max() > 5 * np.abs(ours - whole).max()


ODD_CASES = [  # patches big enough that some products of 1-D windows fall below 1e-3
    ((41, 37, 29), (17, 21, 13), (6, 7, 5)),
    ((45, 33, 27), (19, 15, 27), (8, 5, 0)),
    ((31, 43, 23), (31, 13, 11), (0, 4, 3)),
    ((39, 25, 35), (15, 25, 19), (7, 0, 9)),
]


@pytest.mark.parametrize(("shape", "patch", "overlap"), ODD_CASES)
@pytest.mark.parametrize("mode", ["hann", "gaussian"])
def test_odd_grids_match_the_per_voxel_reference(shape, patch, overlap, mode) -> None:
    """Random patch outputs (so neighbouring patches disagree everywhere), odd shapes."""
    locations = grid_locations(shape, patch, overlap)
    rng = np.random.default_rng(sum(shape) + sum(patch))
    outputs = rng.normal(size=(len(locations), 2, *patch))
    expected = reference_blend(shape, locations, outputs, mode)
    floored = reference_blend(shape, locations, outputs, mode, floor=1e-3)
    ours = aggregate(shape, locations, outputs.astype(np.float32), mode, overlap, batch=3)
    bound = 2e-5
    assert np.abs(ours - expected).max() < bound
    assert np.abs(floored - expected).max() > bound


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["hann", "gaussian"])
def test_low_precision_outputs_keep_the_blend(dtype, mode) -> None:
    """float16 sums of value × weight would underflow at the window corners (4e-11):
    the output still matches the reference blend to its own precision, corners included,
    and a constant stays constant."""
    shape, patch, overlap = (20, 18, 16), (8, 8, 8), (2, 4, 2)
    locations = grid_locations(shape, patch, overlap)
    rng = np.random.default_rng(3)
    outputs = rng.uniform(1, 2, size=(len(locations), 1, *patch))
    expected = reference_blend(shape, locations, outputs, mode)
    ours = aggregate(shape, locations, outputs.astype(np.float32), mode, overlap, dtype=dtype)
    resolution = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert np.abs(ours - expected).max() <= 4 * resolution * 2  # values in [1, 2)
    assert abs(ours[0, 0, 0, 0] - expected[0, 0, 0, 0]) <= 2 * resolution * 2
    constant = np.full_like(outputs, 1.5)
    blended = aggregate(shape, locations, constant.astype(np.float32), mode, overlap, dtype=dtype)
    assert np.all(blended == 1.5)


@pytest.mark.parametrize("mode", ["average", "hann", "gaussian"])
def test_a_constant_stays_constant_at_every_border(mode) -> None:
    shape, patch, overlap = (19, 13, 11), (6, 5, 4), (3, 2, 1)
    locations = grid_locations(shape, patch, overlap)
    outputs = np.full((len(locations), 1, *patch), 0.7, dtype=np.float32)
    np.testing.assert_allclose(aggregate(shape, locations, outputs, mode, overlap), 0.7, rtol=1e-6)


def test_window_corners_are_tiny_but_positive() -> None:
    from voxelflow.patches.blending import window_3d

    for name in ("hann", "gaussian"):
        for size in itertools.product((3, 8, 64), repeat=1):
            w = window_3d(name, size * 3, dtype=torch.float64)
            assert float(w.min()) > 0
            assert math.isclose(float(w.max()), 1.0, rel_tol=1e-2 if size[0] % 2 else 1e-12)
    assert float(window_3d("gaussian", (64,) * 3).min()) < 1e-9  # not floored at 1e-3


def test_user_windows_that_would_lose_their_ratios_are_refused() -> None:
    window = torch.ones(4, 4, 4)
    window[0, 0, 0] = 1e-35
    with pytest.raises(ValueError, match="smallest weight"):
        aggregator = tio.PatchAggregator((4, 4, 4), window=window)
        aggregator.add_batch(torch.ones(1, 1, 4, 4, 4), [tio.PatchLocation((0, 0, 0), (4, 4, 4))])
