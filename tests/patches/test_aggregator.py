"""PatchAggregator: values, not shapes: identity, exactness of crop, constants, downsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import voxelflow as tio
from voxelflow.loader import SubjectsLoader
from voxelflow.patches.accumulators import MemoryAccumulator
from voxelflow.patches.blending import window_3d

MODES = ["crop", "average", "hann", "gaussian"]


def volume(shape=(1, 26, 23, 19), seed=0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(subject, model, aggregator, sampler, batch_size=4) -> None:
    for batch in SubjectsLoader(sampler, batch_size=batch_size):
        aggregator.add_batch(model(batch.t1.data), batch.metadata["patch_location"])


def two_convs(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)
    ).to(dtype)
    return model.eval()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding_mode", [None, "edge"])
def test_identity_model_gives_back_the_input(mode, padding_mode):
    tensor = volume((2, 26, 23, 19))
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    sampler = tio.GridSampler(subject, (10, 9, 8), (4, 3, 2), padding_mode=padding_mode)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    run(subject, lambda x: x, aggregator, sampler)
    output = aggregator.get_output()
    assert output.shape == tensor.shape  # padding round trip: the original shape
    torch.testing.assert_close(output, tensor, rtol=0, atol=1e-6)


@pytest.mark.parametrize("overlap", [4, 5, (6, 4, 5)])
def test_crop_equals_a_full_volume_forward_pass(overlap):
    """Two 3×3×3 convolutions: receptive field 5, a margin of 2 on each side suffices."""
    model = two_convs()
    tensor = volume((1, 30, 27, 22), dtype=torch.float64)
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    with torch.no_grad():
        full = model(tensor[None])[0]
        sampler = tio.GridSampler(subject, (12, 11, 10), overlap)
        aggregator = tio.PatchAggregator.from_sampler(
            sampler, overlap_mode="crop", dtype=torch.float64
        )
        run(subject, model, aggregator, sampler)
    torch.testing.assert_close(aggregator.get_output(), full, rtol=0, atol=1e-12)
    # too small an overlap is not exact: the test can fail
    with torch.no_grad():
        sampler = tio.GridSampler(subject, (12, 11, 10), 2)
        aggregator = tio.PatchAggregator.from_sampler(
            sampler, overlap_mode="crop", dtype=torch.float64
        )
        run(subject, model, aggregator, sampler)
    assert (aggregator.get_output() - full).abs().max() > 1e-3


@pytest.mark.parametrize("padding_mode", ["constant", "reflect"])
def test_padded_crop_equals_a_full_pass_over_the_padded_volume(padding_mode):
    """Padding on the fly is padding the volume: the crop blend equals a full forward pass over
    the padded volume, cropped back to the original shape, borders included."""
    model = two_convs()
    tensor = volume((1, 21, 18, 17), dtype=torch.float64)
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    with torch.no_grad():
        sampler = tio.GridSampler(subject, 10, 4, padding_mode=padding_mode)
        aggregator = tio.PatchAggregator.from_sampler(
            sampler, overlap_mode="crop", dtype=torch.float64
        )
        run(subject, model, aggregator, sampler)
        widths = [w for pair in reversed(sampler.padding) for w in pair]  # F.pad: last axis first
        padded = F.pad(
            tensor[None], widths, mode="replicate" if padding_mode == "edge" else padding_mode
        )
        full = model(padded)[0][:, 2:-2, 2:-2, 2:-2]
    assert sampler.padding == ((2, 2),) * 3
    assert any(min(location.index) < 0 for location in sampler.locations)
    torch.testing.assert_close(aggregator.get_output(), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["average", "hann", "gaussian"])
def test_blending_a_constant_gives_the_constant(mode):
    subject = tio.Subject(t1=tio.ScalarImage(volume((1, 40, 33, 21))))
    sampler = tio.GridSampler(subject, 16, 8)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    run(subject, lambda x: torch.full((x.shape[0], 3, *x.shape[2:]), 3.25), aggregator, sampler)
    output = aggregator.get_output()
    torch.testing.assert_close(output, torch.full_like(output, 3.25), rtol=1e-6, atol=0)


def reference(spatial_shape, overlap, mode, outputs, locations) -> torch.Tensor:
    """The plain way, in NumPy float64: a full 3-D weight per patch, one patch at a time."""
    channels = outputs[0].shape[0]
    sums = np.zeros((channels, *spatial_shape))
    weights = np.zeros(spatial_shape)
    for output, location in zip(outputs, locations, strict=True):
        size = location.size
        if mode == "crop":
            weight = np.zeros(size)
            keep = []
            for axis in range(3):
                lo = overlap[axis] // 2 if location.index[axis] > 0 else 0
                hi = (
                    overlap[axis] - overlap[axis] // 2
                    if location.index_fin[axis] < spatial_shape[axis]
                    else 0
                )
                keep.append(slice(lo, size[axis] - hi))
            weight[tuple(keep)] = 1
        elif mode == "average":
            weight = np.ones(size)
        else:
            weight = window_3d(mode, size, dtype=torch.float64).numpy()
        for i, j, k in np.ndindex(*size):  # per voxel: the slow, obvious way
            point = (location.index[0] + i, location.index[1] + j, location.index[2] + k)
            if all(0 <= p < n for p, n in zip(point, spatial_shape, strict=True)):
                sums[(slice(None), *point)] += output[:, i, j, k].numpy() * weight[i, j, k]
                weights[point] += weight[i, j, k]
    return torch.from_numpy(sums / weights)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding_mode", [None, "constant"])
def test_fast_path_equals_the_plain_per_voxel_reference(mode, padding_mode):
    subject = tio.Subject(t1=tio.ScalarImage(volume((1, 13, 11, 9))))
    sampler = tio.GridSampler(subject, (6, 5, 4), (2, 3, 1), padding_mode=padding_mode)
    generator = torch.Generator().manual_seed(1)
    outputs = [
        torch.randn((2, 6, 5, 4), generator=generator, dtype=torch.float64)
        for _ in sampler.locations
    ]
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode, dtype=torch.float64)
    for start in range(0, len(outputs), 3):
        aggregator.add_batch(
            torch.stack(outputs[start : start + 3]), sampler.locations[start : start + 3]
        )
    expected = reference(
        sampler.spatial_shape, sampler.patch_overlap, mode, outputs, sampler.locations
    )
    torch.testing.assert_close(aggregator.get_output(), expected, rtol=1e-12, atol=1e-12)


def test_hann_weights_patch_centres_more_than_edges():
    """Each patch outputs its own number: inside an overlap Hann favours the nearer centre."""
    subject = tio.Subject(t1=tio.ScalarImage(volume((1, 28, 16, 16))))
    sampler = tio.GridSampler(subject, (16, 16, 16), (4, 0, 0))
    assert [location.index[0] for location in sampler.locations] == [0, 12]
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode="hann")
    outputs = torch.stack([torch.zeros(1, 16, 16, 16), torch.ones(1, 16, 16, 16)])
    aggregator.add_batch(outputs, sampler.locations)
    profile = aggregator.get_output()[0, :, 8, 8]
    assert torch.all(profile[:12] == 0) and torch.all(profile[16:] == 1)
    overlap = profile[12:16]
    assert torch.all(overlap[1:] > overlap[:-1])  # rises monotonically across the overlap
    window = window_3d("hann", (16, 16, 16))[:, 8, 8]
    torch.testing.assert_close(overlap, window[:4] / (window[12:] + window[:4]))


@pytest.mark.parametrize("mode", ["crop", "average", "hann"])
def test_downsampled_output_matches_pooling_the_full_volume(mode):
    tensor = volume((1, 32, 24, 20))
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    sampler = tio.GridSampler(subject, (16, 12, 8), (8, 4, 4))
    aggregator = tio.PatchAggregator(
        spatial_shape=(32, 24, 20),
        output_shape=(16, 12, 10),
        overlap_mode=mode,
        patch_overlap=(8, 4, 4),
    )
    run(subject, lambda x: F.avg_pool3d(x, 2), aggregator, sampler)
    torch.testing.assert_close(
        aggregator.get_output(), F.avg_pool3d(tensor[None], 2)[0], rtol=0, atol=1e-6
    )


def test_named_outputs_at_two_resolutions_in_one_call():
    tensor = volume((1, 32, 24, 20))
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    sampler = tio.GridSampler(subject, (16, 12, 8), (8, 4, 4))
    aggregator = tio.PatchAggregator(
        spatial_shape=subject.spatial_shape,
        overlap_mode="average",
        patch_overlap=(8, 4, 4),
        output_shape={"embedding": (8, 6, 5)},
    )
    for batch in SubjectsLoader(sampler, batch_size=5):
        x = batch.t1.data
        segmentation = torch.cat([x, 1 - x], dim=1)
        aggregator.add_batch({"segmentation": segmentation, "embedding": F.avg_pool3d(x, 4)}, batch)
    seg = aggregator.get_output("segmentation")
    emb = aggregator.get_output("embedding")
    torch.testing.assert_close(seg, torch.cat([tensor, 1 - tensor]), rtol=0, atol=1e-6)
    torch.testing.assert_close(emb, F.avg_pool3d(tensor[None], 4)[0], rtol=0, atol=1e-6)
    assert sorted(aggregator.keys) == ["embedding", "segmentation"]
    with pytest.raises(KeyError, match="Did you mean 'embedding'"):
        aggregator.get_output("embeding")
    with pytest.raises(KeyError, match="several outputs"):
        aggregator.get_output()


def test_images_carry_the_affine_scaled_for_downsampled_outputs(tmp_path):
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = (-20, 10, 5)
    tensor = volume((1, 16, 16, 16))
    subject = tio.Subject(t1=tio.ScalarImage(tensor, affine=affine))
    sampler = tio.GridSampler(subject, 8, 4)
    full = tio.PatchAggregator.from_sampler(sampler, overlap_mode="average")
    half = tio.PatchAggregator.from_sampler(sampler, overlap_mode="average", output_shape=(8, 8, 8))
    for batch in SubjectsLoader(sampler, batch_size=8):
        x = batch.t1.data
        full.add_batch(torch.cat([x, 2 * x], 1), batch)
        half.add_batch(F.avg_pool3d(x, 2), batch)
    image = full.get_image()
    assert isinstance(image, tio.ScalarImage)
    np.testing.assert_array_equal(image.affine, affine)
    small = half.get_image()
    # output voxel (0, 0, 0) sits at the centre of input voxels 0 and 1: world = affine @ 0.5
    np.testing.assert_allclose(
        small.affine[:3, 3], affine[:3, :3] @ [0.5, 0.5, 0.5] + affine[:3, 3]
    )
    np.testing.assert_allclose(small.spacing, (3.0, 4.0, 5.0))
    labels = full.get_image(argmax=True)
    assert isinstance(labels, tio.LabelMap) and labels.data.dtype == torch.uint8
    assert torch.all(labels.data == 1)  # 2x beats x everywhere (x > 0)
    full.save(tmp_path / "out.nii.gz")
    saved = tio.ScalarImage(tmp_path / "out.nii.gz")
    torch.testing.assert_close(saved.data, image.data)
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)


def test_seed_page_downsampled_example_shapes():
    aggregator = tio.PatchAggregator(
        spatial_shape=(256, 256, 176), output_shape=(128, 128, 88), overlap_mode="average"
    )
    location = tio.PatchLocation((64, 0, 112), (64, 64, 64))
    aggregator.add_batch(torch.ones(1, 2, 32, 32, 32), [location])
    assert aggregator.keys == ["output"]
    assert aggregator._outputs["output"].accumulator.values.shape == (2, 128, 128, 88)


def test_float16_accumulators_halve_the_memory():
    tensor = volume((1, 24, 24, 24))
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    sampler = tio.GridSampler(subject, 12, 4)
    results = {}
    for dtype in (torch.float32, torch.float16):
        aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode="gaussian", dtype=dtype)
        run(subject, lambda x: x, aggregator, sampler)
        results[dtype] = (aggregator.get_output(), aggregator.memory_bound)
    half, half_bytes = results[torch.float16]
    assert half.dtype == torch.float16
    torch.testing.assert_close(
        half.float(), tensor, rtol=4e-3, atol=1e-4
    )  # float16: 11-bit mantissa
    assert half_bytes == 24**3 * (2 + 4)  # float16 sums, one float32 weight channel
    assert results[torch.float32][1] == 24**3 * (4 + 4)


def test_user_window_and_torchio_style_locations():
    tensor = volume((1, 20, 20, 20))
    subject = tio.Subject(t1=tio.ScalarImage(tensor))
    sampler = tio.GridSampler(subject, 10, 4)
    window = torch.rand(10, 10, 10, generator=torch.Generator().manual_seed(0)) + 0.1
    aggregator = tio.PatchAggregator.from_sampler(sampler, window=window)
    for batch in SubjectsLoader(sampler, batch_size=4):
        rows = torch.tensor(
            [[*loc.index_ini, *loc.index_fin] for loc in batch.metadata["patch_location"]]
        )
        aggregator.add_batch(batch.t1.data * 0 + 7, rows)  # TorchIO's (B, 6) form
    torch.testing.assert_close(aggregator.get_output(), torch.full_like(tensor, 7.0))
    with pytest.raises(ValueError, match="strictly positive"):
        bad = tio.PatchAggregator((20, 20, 20), window=torch.zeros(10, 10, 10))
        bad.add_batch(torch.ones(1, 1, 10, 10, 10), [sampler.locations[0]])
    with pytest.raises(ValueError, match="cannot be combined"):
        tio.PatchAggregator((20, 20, 20), "crop", window=window)


def test_device_option_hands_back_where_asked():
    aggregator = tio.PatchAggregator((8, 8, 8), "average", device="cpu")
    aggregator.add_batch(torch.ones(1, 1, 8, 8, 8), [tio.PatchLocation((0, 0, 0), (8, 8, 8))])
    assert aggregator.get_output(device="cpu").device.type == "cpu"
    if torch.cuda.is_available():  # accumulate on the GPU, hand back on the CPU
        gpu = tio.PatchAggregator((8, 8, 8), "hann", device="cuda")
        gpu.add_batch(torch.ones(1, 1, 8, 8, 8), [tio.PatchLocation((0, 0, 0), (8, 8, 8))])
        assert gpu._outputs["output"].accumulator.values.device.type == "cuda"
        assert torch.equal(gpu.get_output(device="cpu"), torch.ones(1, 8, 8, 8))


# ---------------------------------------------------------------- bad input
def whole(shape=(8, 8, 8)) -> tio.PatchLocation:
    return tio.PatchLocation((0, 0, 0), shape)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="Did you mean 'hann'"):
        tio.PatchAggregator((8, 8, 8), "han")
    with pytest.raises(ValueError, match="whole factor"):
        tio.PatchAggregator((8, 8, 9), output_shape=(4, 4, 4))
    aggregator = tio.PatchAggregator((16, 16, 16), "average", patch_overlap=2)
    with pytest.raises(RuntimeError, match="nothing was added yet"):
        aggregator.get_output()
    with pytest.raises(ValueError, match="lies outside the volume"):
        aggregator.add_batch(torch.ones(1, 1, 8, 8, 8), [tio.PatchLocation((12, 0, 0), (8, 8, 8))])
    with pytest.raises(ValueError, match="lies outside the volume"):
        aggregator.add_batch(torch.ones(1, 1, 8, 8, 8), [tio.PatchLocation((-3, 0, 0), (8, 8, 8))])
    with pytest.raises(ValueError, match="2 patches but 1 locations"):
        aggregator.add_batch(torch.ones(2, 1, 8, 8, 8), [whole()])
    with pytest.raises(ValueError, match=r"must be a \(B, C, I, J, K\) tensor"):
        aggregator.add_batch(torch.ones(1, 8, 8, 8), [whole()])
    with pytest.raises(ValueError, match="pass output_shape="):
        aggregator.add_batch(torch.ones(1, 1, 4, 4, 4), [whole()])
    with pytest.raises(TypeError, match="PatchLocation"):
        aggregator.add_batch(torch.ones(1, 1, 8, 8, 8), [(0, 0, 0)])
    aggregator.add_batch(torch.ones(1, 3, 8, 8, 8), [whole()])
    with pytest.raises(ValueError, match="had 3 channels, this batch has 2"):
        aggregator.add_batch(torch.ones(1, 2, 8, 8, 8), [whole()])
    with pytest.raises(ValueError, match="covered by no patch"):
        aggregator.get_output()
    with pytest.raises(KeyError, match="Did you mean 'output'"):
        aggregator.get_output("outptu")


def test_a_failed_batch_adds_nothing():
    aggregator = tio.PatchAggregator((8, 8, 8), "average")
    aggregator.add_batch(torch.ones(1, 1, 8, 8, 8), [whole()])
    bad = [whole(), tio.PatchLocation((9, 0, 0), (8, 8, 8))]
    with pytest.raises(ValueError, match="outside"):
        aggregator.add_batch(torch.full((2, 1, 8, 8, 8), 5.0), bad)
    assert torch.equal(aggregator.get_output(), torch.ones(1, 8, 8, 8))


def _random_case(seed: int):
    """Random spatial shape, downsampling factor, patch size, channels, and overlapping
    locations on multiples of the factor that land whole in the volume."""
    rng = np.random.default_rng(seed)
    factor = tuple(int(f) for f in rng.choice([1, 2], size=3))
    patch = tuple(int(f * rng.integers(2, 6)) for f in factor)
    shape = tuple(int(p + f * rng.integers(0, 6)) for p, f in zip(patch, factor, strict=True))
    batches = []
    for _ in range(int(rng.integers(1, 4))):
        size = int(rng.integers(2, 7))
        corners = [
            tuple(
                int(f * rng.integers(0, (s - p) // f + 1))
                for s, p, f in zip(shape, patch, factor, strict=True)
            )
            for _ in range(size)
        ]
        corners[-1] = corners[0]  # at least two patches of a batch on exactly the same voxels
        batches.append([tio.PatchLocation(c, patch) for c in corners])
    return rng, shape, factor, patch, batches


def _fill(aggregator, batches, outputs, *, whole_batch: bool) -> list[bool]:
    """Add every batch with the whole-batch path allowed or not; report which path each took."""
    aggregator._vectorised_max_voxels = 10**9 if whole_batch else 0
    taken = []
    original = MemoryAccumulator._add_whole_batch

    def spy(*args, **kwargs):
        taken.append(True)
        return original(*args, **kwargs)

    MemoryAccumulator._add_whole_batch = spy  # type: ignore[method-assign]
    try:
        for locations, output in zip(batches, outputs, strict=True):
            aggregator.add_batch(output, locations)
    finally:
        MemoryAccumulator._add_whole_batch = original  # type: ignore[method-assign]
    return taken


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(8))
def test_fastpath_equivalence(seed, dtype):
    """The whole-batch ``index_add_`` path gives what the per-patch path gives: random
    outputs, modes, windows, overlapping (even coinciding) locations, downsampled and
    named outputs.

    Outputs are multiples of 1/64 and custom windows multiples of 1/8, so with "average"
    and a custom window every product and sum is exact and both paths must agree bit for
    bit, in float64 and float32 alike: a voxel put in the wrong place cannot hide in a
    tolerance. Hann and Gaussian windows are not dyadic; there the per-patch ``addcmul_``
    rounds once (fused multiply-add) where the whole-batch path rounds the product and
    then the sum, so they agree to a few ulps."""
    rng, shape, factor, patch, batches = _random_case(seed)
    choice = ["average", "hann", "gaussian", "custom"][seed % 4]
    patch_out = tuple(p // f for p, f in zip(patch, factor, strict=True))
    out_shape = tuple(s // f for s, f in zip(shape, factor, strict=True))
    generator = torch.Generator().manual_seed(seed)
    channels = int(rng.integers(1, 4))

    def random_output(*size: int) -> torch.Tensor:
        values = torch.randn(size, generator=generator, dtype=torch.float64)
        return (torch.round(values * 64) / 64).to(dtype)

    outputs = [
        {
            "full": random_output(len(b), channels, *patch),
            "low": random_output(len(b), 2, *patch_out),
        }
        for b in batches
    ]
    options = {"output_shape": {"low": out_shape}, "dtype": dtype}
    if choice == "custom":
        # one window per patch size (full and downsampled), strictly positive, dyadic
        options["window"] = lambda size: torch.randint(1, 9, size, generator=generator) / 8
    else:
        options["overlap_mode"] = choice
    slow = tio.PatchAggregator(shape, **options)
    fast = tio.PatchAggregator(shape, **options)
    assert not _fill(slow, batches, outputs, whole_batch=False)
    if choice == "custom":  # the same random windows in both
        fast._windows = dict(slow._windows)
    assert len(_fill(fast, batches, outputs, whole_batch=True)) == sum(
        2 for b in batches if len(b) > 1
    )
    exact = choice in ("average", "custom")
    tolerance = {torch.float64: 1e-13, torch.float32: 1e-5}[dtype]
    for key in ("full", "low"):
        a, b = fast._outputs[key].accumulator, slow._outputs[key].accumulator
        assert a.values.abs().sum() > 0 and (a.weights > 0).any()  # something was added
        assert torch.equal(a.weights > 0, b.weights > 0)  # the same voxels were covered
        covered = b.weights > 0
        blended = a.values[:, covered] / a.weights[covered]
        expected = b.values[:, covered] / b.weights[covered]
        if exact:
            assert torch.equal(a.values, b.values) and torch.equal(a.weights, b.weights)
            assert torch.equal(blended, expected)
        else:
            torch.testing.assert_close(a.values, b.values, rtol=tolerance, atol=tolerance)
            torch.testing.assert_close(a.weights, b.weights, rtol=tolerance, atol=tolerance)
            torch.testing.assert_close(blended, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("mode", ["crop", "hann"])
def test_fastpath_is_skipped_for_cropped_patches(mode, monkeypatch):
    """Crop mode and patches cut by the border of a padded grid keep the per-patch path,
    and still give the reference's values."""
    subject = tio.Subject(t1=tio.ScalarImage(volume((1, 13, 11, 9))))
    sampler = tio.GridSampler(subject, (6, 5, 4), (2, 2, 2), padding_mode="constant")
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    aggregator._vectorised_max_voxels = 10**9
    taken = []
    original = MemoryAccumulator._add_whole_batch
    monkeypatch.setattr(
        MemoryAccumulator, "_add_whole_batch", lambda *a: taken.append(True) or original(*a)
    )
    locations = sampler.locations
    whole = [
        loc
        for loc in locations
        if all(
            i >= 0 and f <= n
            for i, f, n in zip(loc.index_ini, loc.index_fin, (13, 11, 9), strict=True)
        )
    ]
    cut = [loc for loc in locations if loc not in whole]
    assert len(whole) >= 2 and cut
    for batch in (whole, cut):
        aggregator.add_batch(torch.ones(len(batch), 1, 6, 5, 4) * 3, batch)
    assert len(taken) == (1 if mode == "hann" else 0)
    torch.testing.assert_close(aggregator.get_output(), torch.full((1, 13, 11, 9), 3.0))


def test_window_is_a_copy_the_caller_may_change():
    """An in-place change to one window must not change later windows of that size."""
    first = window_3d("hann", (6, 5, 4))
    expected = first.clone()
    first.mul_(0).add_(7)
    again = window_3d("hann", (6, 5, 4))
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert again.data_ptr() != first.data_ptr()


def test_get_image_affine_does_not_change_the_aggregator():
    original = np.diag([2.0, 2.0, 2.0, 1.0])
    aggregator = tio.PatchAggregator((4, 4, 4), "average", affine=original)
    box = tio.PatchLocation((0, 0, 0), (4, 4, 4))
    aggregator.add_batch(torch.ones(1, 1, 4, 4, 4), [box])
    other = np.diag([3.0, 3.0, 3.0, 1.0])
    assert np.array_equal(aggregator.get_image(affine=other).affine, other)
    assert np.array_equal(aggregator.affine, original)
    assert np.array_equal(aggregator.get_image().affine, original)


def test_adding_after_get_output_is_refused_until_reset():
    box = tio.PatchLocation((0, 0, 0), (4, 4, 4))
    aggregator = tio.PatchAggregator((4, 4, 4), "hann")
    aggregator.add_batch(torch.full((1, 1, 4, 4, 4), 2.0), [box])
    first = aggregator.get_output()
    torch.testing.assert_close(first, torch.full((1, 4, 4, 4), 2.0))
    with pytest.raises(RuntimeError, match="count patches twice"):
        aggregator.add_batch(torch.full((1, 1, 4, 4, 4), 5.0), [box])
    assert aggregator.get_output() is first  # unchanged, blended once
    aggregator.reset()
    aggregator.add_batch(torch.full((1, 1, 4, 4, 4), 5.0), [box])
    torch.testing.assert_close(aggregator.get_output(), torch.full((1, 4, 4, 4), 5.0))
