"""TorchIO 1.x's Random* names: 1.x parameters and defaults mapped onto the 2.0 transforms."""

from __future__ import annotations

import pytest
import torch

import voxelflow as tio


def _draws(transform: tio.Transform, key: str, n: int = 300) -> list:
    subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 8, 8, 8)))
    generator = torch.Generator().manual_seed(0)
    return [transform.make_params(subject, generator)[key] for _ in range(n)]


def test_ranges_are_torchio_1x() -> None:
    gammas = _draws(tio.RandomGamma(log_gamma=0.3), "log_gamma")
    assert -0.3 <= min(gammas) < -0.25 and 0.25 < max(gammas) <= 0.3
    assert tio.RandomGamma().log_gamma.axes[0] == (-0.3, 0.3)
    stds = _draws(tio.RandomNoise(std=0.2), "std")
    assert 0 <= min(stds) < 0.02 and 0.18 < max(stds) <= 0.2
    means = _draws(tio.RandomNoise(mean=1.0), "mean")
    assert -1 <= min(means) < -0.9 and 0.9 < max(means) <= 1
    assert tio.RandomNoise().std.axes[0] == (0.0, 0.25)
    blurs = [s for draw in _draws(tio.RandomBlur(std=3), "std") for s in draw]
    assert 0 <= min(blurs) < 0.1 and 2.9 < max(blurs) <= 3
    per_axis = _draws(tio.RandomBlur(std=(1, 2, 3)), "std")
    assert max(d[0] for d in per_axis) <= 1 and max(d[2] for d in per_axis) > 2
    coefficients = [
        c
        for draw in _draws(tio.RandomBiasField(coefficients=0.4), "coefficients", 20)
        for c in draw
    ]
    assert (
        len(coefficients) == 400 and -0.4 <= min(coefficients) < -0.35 and max(coefficients) > 0.35
    )
    ghosts = _draws(tio.RandomGhosting(), "num_ghosts")
    assert min(ghosts) == 4 and max(ghosts) == 10
    assert tio.RandomGhosting(intensity=0.8).intensity.axes[0] == (0.0, 0.8)
    spikes = _draws(tio.RandomSpike(), "intensity")
    assert 1 <= min(spikes) < 1.1 and 2.9 < max(spikes) <= 3
    assert _draws(tio.RandomSpike(), "positions", 5)[0].__len__() == 1
    degrees = [
        d
        for m in _draws(tio.RandomMotion(degrees=5), "transforms", 50)
        for t in m
        for d in t["degrees"]
    ]
    assert -5 <= min(degrees) < -4 and 4 < max(degrees) <= 5


def test_aliases_apply_invert_and_keep_their_history_names() -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 8, 8, 8) + 0.5))
    out = tio.Compose([tio.RandomGamma(), tio.RandomBiasField(), tio.RandomNoise(std=0)], seed=0)(
        subject
    )
    assert [e.name for e in out.applied_transforms] == [
        "RandomGamma",
        "RandomBiasField",
        "RandomNoise",
    ]
    back = out.apply_inverse_transform(warn=False)
    torch.testing.assert_close(back.t1.data, subject.t1.data, rtol=1e-5, atol=1e-5)
    for alias in (tio.RandomBlur(), tio.RandomMotion(), tio.RandomGhosting(), tio.RandomSpike()):
        assert alias(subject).t1.shape == subject.t1.shape
    with pytest.raises(ValueError, match="image_interpolation='nearest' is not supported"):
        tio.RandomMotion(image_interpolation="nearest")
