"""Noise: exactly patchwise (a counter-based generator), Gaussian and Rician distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from equivalence import check_regions_match_whole
from scipy import stats

import voxelflow as tio
from voxelflow.transforms.intensity.counter_rng import (
    _normal_pairs_torch,
    _splitmix_numpy,
    normal_pairs,
)


def _splitmix_reference(index: int, seed: int) -> int:
    """SplitMix64 in Python integers (Steele, Lea and Flood): the specification."""
    mask = (1 << 64) - 1
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_the_hash_is_splitmix64() -> None:
    index = np.array([0, 1, 2, 10**9, 2**40 + 3, 2**62], dtype=np.uint64)
    for seed in (0, 1, 2**61 + 12345):
        got = _splitmix_numpy(index.copy(), np.uint64(seed)).tolist()
        assert got == [_splitmix_reference(int(i), seed) for i in index]


def test_a_region_is_the_same_region_of_the_whole_volume_bit_for_bit() -> None:
    shape = (2, 13, 8, 7)
    whole = normal_pairs(42, (0, 0, 0), shape[1:], shape)
    for start, stop in [((0, 0, 0), (1, 1, 1)), ((12, 7, 6), (13, 8, 7)), ((3, 2, 1), (9, 8, 6))]:
        part = normal_pairs(42, start, stop, shape)
        box = (slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))
        for got, expected in zip(part, whole, strict=True):
            assert got is not None and expected is not None
            assert torch.equal(got, expected[box])
    first, none = normal_pairs(42, (3, 2, 1), (9, 8, 6), shape, second=False)
    assert none is None and torch.equal(first, whole[0][:, 3:9, 2:8, 1:6])


def test_the_torch_path_hashes_the_same_integers() -> None:
    """The path used on GPUs, run on the CPU: same integers, so the same uniforms; the
    float functions agree to rounding."""
    shape = (2, 9, 8, 7)
    numpy_path = normal_pairs(5, (1, 2, 3), (8, 6, 7), shape)
    torch_path = _normal_pairs_torch(5, (1, 2, 3), (2, 7, 4, 4), shape[1:], torch.device("cpu"))
    for a, b in zip(numpy_path, torch_path, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 16, 17, 9), (3, 8, 6, 5)])
def test_noisy_patches_equal_the_whole_noisy_volume(shape: tuple[int, ...]) -> None:
    subject = tio.Subject(
        t1=tio.ScalarImage(torch.rand(shape)), t2=tio.ScalarImage(torch.rand(shape))
    )
    for transform in (tio.Noise(std=0.3), tio.Noise(mean=0.5, std=0.2, rician=True)):
        out = transform(subject, torch.Generator().manual_seed(1))
        check_regions_match_whole(
            out, sizes=[(1, 1, 1), (4, 4, 4), (5, 6, 7), (16, 1, 3)], rtol=0, atol=0
        )


def test_gaussian_noise_distribution() -> None:
    data = torch.full((2, 40, 40, 40), 3.0)
    out = tio.Noise(mean=1.0, std=0.5, seed=0)(tio.ScalarImage(data)).data
    noise = (out - data).double().flatten().numpy()
    assert abs(noise.mean() - 1.0) < 0.002 and abs(noise.std() - 0.5) < 0.002
    # against N(1, 0.25): Kolmogorov–Smirnov on 128 000 values, and the tails
    assert stats.kstest(noise, "norm", args=(1.0, 0.5)).pvalue > 1e-3
    beyond = np.mean(np.abs(noise - 1.0) > 1.5)  # 3 sigma: 0.27 %
    assert 0.0020 < beyond < 0.0034
    channels = (out - data)[:, :, :, :].reshape(2, -1)
    assert abs(np.corrcoef(channels.numpy())[0, 1]) < 0.01  # channels independent
    neighbours = noise.reshape(2, 40, 40, 40)
    assert abs(np.corrcoef(neighbours[0, :-1].ravel(), neighbours[0, 1:].ravel())[0, 1]) < 0.01


def test_rician_noise_distribution() -> None:
    """sqrt((I + n1)^2 + n2^2), n ~ N(0, sigma^2): Rice(nu=I/sigma, scale=sigma)."""
    signal, sigma = 2.0, 0.8
    out = tio.Noise(std=sigma, rician=True, seed=3)(torch.full((1, 50, 50, 40), signal))
    values = out.double().flatten().numpy()
    assert values.min() >= 0
    assert stats.kstest(values, "rice", args=(signal / sigma, 0, sigma)).pvalue > 1e-3
    np.testing.assert_allclose(
        values.mean(), stats.rice.mean(signal / sigma, scale=sigma), rtol=5e-3
    )
    zero = tio.Noise(std=1.0, rician=True, seed=1)(torch.zeros(1, 40, 40, 40)).double().numpy()
    assert stats.kstest(zero.ravel(), "rayleigh", args=(0, 1.0)).pvalue > 1e-3  # nu = 0


def test_images_and_calls_get_different_noise_labels_none() -> None:
    subject = tio.Subject(
        t1=tio.ScalarImage(torch.zeros(1, 8, 8, 8)),
        t2=tio.ScalarImage(torch.zeros(1, 8, 8, 8)),
        seg=tio.LabelMap(torch.ones(1, 8, 8, 8, dtype=torch.uint8)),
    )
    noise = tio.Noise(std=1.0, seed=0)
    first, second = noise(subject), noise(subject)
    assert not torch.equal(first.t1.data, first.t2.data)
    assert not torch.equal(first.t1.data, second.t1.data)
    assert torch.equal(first.seg.data, subject.seg.data)
    params = first.applied_transforms[0].params
    replay = noise.apply_transform(subject, dict(params))
    assert torch.equal(replay.t1.data, first.t1.data)  # the recorded seed reproduces it


def test_noise_parameters() -> None:
    g = torch.Generator().manual_seed(0)
    subject = tio.Subject(t1=tio.ScalarImage(torch.zeros(1, 2, 2, 2)))
    stds = [tio.Noise(std=(0.1, 0.3)).make_params(subject, g)["std"] for _ in range(200)]
    assert 0.1 <= min(stds) < 0.12 and 0.28 < max(stds) <= 0.3
    with pytest.raises(ValueError, match="Noise std must be at least 0"):
        tio.Noise(std=(-1, 1))
    from torch.distributions import LogNormal

    drawn = tio.Noise(std=LogNormal(-2.0, 0.5)).make_params(subject, g)["std"]
    assert drawn > 0
