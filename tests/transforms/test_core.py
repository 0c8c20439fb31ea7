"""The transform core: parameters, history and inverses, and region-computed (lazy) images."""

from __future__ import annotations

import pickle
from functools import partial

import numpy as np
import pytest
import torch
from torch.distributions import Normal, Uniform

import voxelflow as tio
from voxelflow.transforms.lazy import Region, RegionMapBackend
from voxelflow.transforms.parameters import Choice, ParameterRange, symmetric_range


# ---------------------------------------------------------------- parameters
def _draws(parameter: ParameterRange, n: int, seed: int = 0) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return np.array([parameter.sample(generator) for _ in range(n)])


def test_fixed_forms() -> None:
    generator = torch.Generator().manual_seed(0)
    assert ParameterRange(5, "x").sample(generator) == (5.0, 5.0, 5.0)
    assert ParameterRange((1, 2, 3), "x").sample(generator) == (1.0, 2.0, 3.0)
    assert ParameterRange((4,), "x").sample(generator) == (4.0, 4.0, 4.0)
    assert ParameterRange(5, "x").is_fixed and not ParameterRange((0, 1), "x").is_fixed
    assert ParameterRange((0, 0), "x").is_constant(0) and not ParameterRange(1, "x").is_constant(0)


def test_ranges_are_uniform_per_axis() -> None:
    draws = _draws(ParameterRange((-10, 10), "degrees"), 4000)
    assert draws.min() >= -10 and draws.max() <= 10
    assert np.allclose(draws.mean(axis=0), 0, atol=0.5)
    assert np.allclose(draws.std(axis=0), 20 / np.sqrt(12), rtol=0.05)
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.06  # axes drawn independently
    six = _draws(ParameterRange((0, 1, 10, 11, -3, -2), "x"), 500)
    assert (six[:, 0] >= 0).all() and (six[:, 1] >= 10).all() and (six[:, 2] <= -2).all()


def test_mixed_axes_choice_and_distribution() -> None:
    parameter = ParameterRange((0, Choice([-90, 90]), (-5, 5)), "degrees")
    draws = _draws(parameter, 2000)
    assert (draws[:, 0] == 0).all()
    assert set(np.unique(draws[:, 1])) == {-90.0, 90.0}
    assert abs((draws[:, 1] > 0).mean() - 0.5) < 0.05
    assert (np.abs(draws[:, 2]) <= 5).all()
    weighted = _draws(ParameterRange(Choice([1, 2], probabilities=[0.9, 0.1]), "x"), 2000)
    assert abs((weighted[:, 0] == 1).mean() - 0.9) < 0.03
    normal = _draws(ParameterRange(Normal(3.0, 2.0), "x"), 4000)
    assert abs(normal.mean() - 3.0) < 0.1 and abs(normal.std() - 2.0) < 0.1


def test_distribution_draws_follow_the_generator_not_the_global_rng() -> None:
    parameter = ParameterRange(Normal(0.0, 1.0), "x")
    torch.manual_seed(1)
    first = _draws(parameter, 5, seed=7)
    torch.manual_seed(2)
    assert np.array_equal(first, _draws(parameter, 5, seed=7))
    uniform = ParameterRange(Uniform(0.0, 1.0), "x")  # icdf path
    assert np.array_equal(_draws(uniform, 5, seed=3), _draws(uniform, 5, seed=3))


@pytest.mark.parametrize(
    ("value", "kwargs", "match"),
    [
        ((3, 1), {}, "low <= high"),
        ((1, 2, 3, 4), {}, "1, 2, 3 or 6"),
        ("ten", {}, "expected a number"),
        ((-1, 2), {"nonnegative": True}, "at least 0"),
        (200, {"bounds": (None, 180)}, "at most 180"),
        ((0, (1, 2, 3), 0), {}, "each axis"),
        (Choice([1, 500]), {"bounds": (0, 100)}, "at most 100"),
    ],
)
def test_bad_parameters_name_the_parameter(value, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=match) as info:
        ParameterRange(value, "Affine degrees", **kwargs)
    assert "Affine degrees" in str(info.value)


def test_distribution_draws_are_checked_against_bounds() -> None:
    parameter = ParameterRange(Normal(-100.0, 0.1), "Gamma log_gamma", bounds=(0, None))
    with pytest.raises(ValueError, match="at least 0"):
        parameter.sample(torch.Generator().manual_seed(0))


def test_symmetric_range_is_torchio_1x() -> None:
    assert symmetric_range(10) == (-10.0, 10.0)
    assert symmetric_range((1, 2, 3)) == (-1.0, 1.0, -2.0, 2.0, -3.0, 3.0)
    low, high = symmetric_range(0.1, around=1.0)
    assert low == pytest.approx(0.9) and high == pytest.approx(1.1)
    assert symmetric_range((5, 6)) == (5, 6)


# ---------------------------------------------------------------- history and inverse
def test_history_records_drawn_parameters_in_order() -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 6, 6, 6)))
    transform = tio.Compose([tio.Pad(1), tio.Noise(std=(0.1, 0.2), seed=3)])
    out = transform(subject)
    names = [entry.name for entry in out.applied_transforms]
    assert names == ["Pad", "Noise"]
    assert 0.1 <= out.applied_transforms[1].params["std"] <= 0.2
    assert subject.applied_transforms == []  # the input is never changed
    patch = out[1:3]
    assert [e.name for e in patch.applied_transforms] == names  # slicing keeps the history


def test_history_survives_pickling() -> None:
    out = tio.Pad(2)(tio.Subject(t1=tio.ScalarImage(torch.rand(1, 3, 3, 3))))
    again = pickle.loads(pickle.dumps(out))
    assert again.applied_transforms == out.applied_transforms


def test_skipped_transform_is_not_recorded() -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 3, 3, 3)))
    assert tio.Pad(1, p=0.0)(subject).applied_transforms == []


def test_inverse_of_crop_pad_flip_round_trips_values() -> None:
    data = torch.rand(1, 7, 8, 9)
    subject = tio.Subject(t1=tio.ScalarImage(data), seg=tio.LabelMap((data > 0.5).int()))
    transform = tio.Compose(
        [tio.Pad((1, 2, 3)), tio.Flip(axes=(0, 2)), tio.Crop((1, 0, 2)), tio.CropOrPad((8, 8, 8))]
    )
    out = transform(subject)
    assert out.spatial_shape == (8, 8, 8)
    back = out.apply_inverse_transform()
    assert back.spatial_shape == (7, 8, 9)
    # Crop and CropOrPad lose voxels; compare where they survive
    kept = tio.Compose([tio.Pad((1, 2, 3)), tio.Flip(axes=(0, 2))])(subject)
    assert torch.equal(kept.apply_inverse_transform().t1.data, data)
    # Crop((1, 0, 2)) removed I voxel 0 (after the pad: padding) and the first two K voxels
    # (3 of padding... minus 1 of data); CropOrPad cut I and J. Voxels that survived every
    # step come back where they were:
    restored = back.seg.data[0, 1:7, :, 1:9]
    assert torch.equal(restored, subject.seg.data[0, 1:7, :, 1:9])


def test_non_invertible_transforms_warn_and_are_skipped() -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.zeros(1, 4, 4, 4)))
    out = tio.Compose([tio.Pad(1), tio.Noise(std=1.0, seed=0)])(subject)
    with pytest.warns(UserWarning, match="Noise is not invertible"):
        back = out.apply_inverse_transform()
    assert back.spatial_shape == (4, 4, 4)
    quiet = out.apply_inverse_transform(warn=False, ignore_intensity=True)
    assert quiet.spatial_shape == (4, 4, 4)


def test_same_seed_same_parameters() -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.zeros(1, 4, 4, 4)))
    a = tio.Noise(std=(0, 1), seed=5)(subject).applied_transforms[0].params
    b = tio.Noise(std=(0, 1), seed=5)(subject).applied_transforms[0].params
    assert a == b


# ---------------------------------------------------------------- lazy region maps
def _local_mean(data: torch.Tensor, region: Region) -> torch.Tensor:
    """3×3×3 box mean (halo 1), plus each voxel's global I index: location-aware."""
    kernel = torch.ones(1, 1, 3, 3, 3, dtype=data.dtype) / 27
    out = torch.nn.functional.conv3d(data[:, None], kernel)[:, 0]
    i = region.indices()[0].to(data.dtype)
    return out + i[None, :, None, None]


@pytest.mark.parametrize("border", ["edge", "reflect", "symmetric", "constant", 2.5])
def test_region_reads_equal_whole_then_crop_at_every_edge(border: str | float) -> None:
    source = tio.ScalarImage(torch.rand(2, 9, 7, 5, dtype=torch.float64))
    lazy = source.lazy_like(RegionMapBackend(source.dataobj, _local_mean, halo=1, border=border))
    assert not lazy.is_loaded
    whole = lazy.data
    for box in [
        (slice(None), slice(0, 1), slice(0, 7), slice(4, 5)),  # faces and corners
        (slice(None), slice(8, 9), slice(6, 7), slice(0, 1)),
        (slice(1, 2), slice(2, 6), slice(1, 3), slice(1, 4)),
        (slice(None), slice(0, 9, 2), slice(None, None, 3), slice(None)),
    ]:
        # equal up to the convolution's own rounding, which depends on the tensor's extent
        torch.testing.assert_close(lazy.dataobj[box], whole[box], rtol=1e-13, atol=1e-13)


def test_region_reads_read_only_the_footprint(strict_file) -> None:  # type: ignore[no-untyped-def]
    path, data, _ = strict_file
    image = tio.ScalarImage(path)
    lazy = image.lazy_like(RegionMapBackend(image.dataobj, _local_mean, halo=1))
    patch = lazy[:, 2:6, 3:7, 0:4].data  # the strict backend raises on a whole read
    from conftest import StrictBackend

    (box,) = StrictBackend.log
    assert [(s.start, s.stop) for s in box[1:]] == [(1, 7), (2, 8), (0, 5)]  # + halo, clipped
    expected = tio.ScalarImage(torch.from_numpy(data)).lazy_like(
        RegionMapBackend(tio.ScalarImage(torch.from_numpy(data)).dataobj, _local_mean, halo=1)
    )
    torch.testing.assert_close(patch, expected.data[:, 2:6, 3:7, 0:4], rtol=1e-6, atol=1e-6)


def test_region_map_pickles_with_a_module_function() -> None:
    image = tio.ScalarImage(torch.rand(1, 5, 5, 5))
    backend = RegionMapBackend(image.dataobj, partial(_scaled, factor=3.0), dtype=torch.float64)
    again = pickle.loads(pickle.dumps(backend))
    assert torch.allclose(again.read(None), 3 * image.data.double())


def _scaled(data: torch.Tensor, region: Region, factor: float) -> torch.Tensor:
    return data.double() * factor
