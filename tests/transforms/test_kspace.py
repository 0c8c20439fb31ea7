"""Motion, Ghosting, Spike: k-space properties of the artefacts they make."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow.transforms.intensity.kspace import rigid_resample, spike_indices


def _volume(shape: tuple[int, ...] = (1, 16, 12, 10), seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape))


def _centred(x: torch.Tensor) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(x.numpy(), axes=(1, 2, 3)), axes=(1, 2, 3))


def test_spike_adds_energy_at_the_drawn_positions_only() -> None:
    x = _volume((2, 16, 12, 10))
    subject = tio.Spike(num_spikes=3, intensity=(0.5, 1.0), seed=2)(
        tio.Subject(t1=tio.ScalarImage(x))
    )
    params = subject.applied_transforms[0].params
    assert len(params["positions"]) == 3
    difference = _centred(subject.t1.data) - _centred(x)
    peak = np.abs(_centred(x)).max(axis=(1, 2, 3))
    spikes = spike_indices(params["positions"], x.shape[1:])
    expected = np.zeros_like(difference)
    for index in spikes:
        expected[(slice(None), *index)] += peak * params["intensity"]
    # the real part of the inverse FFT keeps the Hermitian part of each spike: half of it
    # at its own position and half (conjugated) at the mirrored one
    hermitian = np.zeros_like(expected)
    for c in range(2):
        full = np.fft.ifftshift(expected[c])
        mirrored = np.conj(np.roll(np.flip(full), 1, axis=(0, 1, 2)))
        hermitian[c] = np.fft.fftshift((full + mirrored) / 2)
    np.testing.assert_allclose(difference, hermitian, atol=1e-8 * peak.max())
    assert tio.Spike(intensity=0)(x).equal(x)


def test_ghosting_repeats_the_artefact_with_the_ghost_period() -> None:
    x = _volume((1, 64, 6, 5))
    out = tio.Ghosting(num_ghosts=4, axes=(0,), intensity=0.7)(x)
    artefact = (out - x)[0].numpy()
    period = 64 // (64 // 4)  # planes every size // num_ghosts in k-space: ghosts every 4 voxels
    np.testing.assert_allclose(artefact, np.roll(artefact, period, axis=0), atol=1e-12)
    assert np.abs(artefact).max() > 0.05
    np.testing.assert_allclose(out.mean(), x.mean(), atol=1e-12)  # the central plane is restored
    spectrum_ratio = np.abs(_centred(out)) / np.maximum(np.abs(_centred(x)), 1e-12)
    attenuated = spectrum_ratio[0, ::16, 3, 2]  # planes 0, 16, 48 (32 is the centre)
    np.testing.assert_allclose(attenuated[[0, 1, 3]], 0.3, rtol=1e-6)
    assert tio.Ghosting(intensity=0)(x).equal(x)


def test_ghosting_draws_an_axis_among_the_given_ones() -> None:
    image = tio.Subject(t1=tio.ScalarImage(_volume()))
    axes = {
        tio.Ghosting(axes=(1, 2), intensity=0.5, seed=s)(image).applied_transforms[0].params["axis"]
        for s in range(20)
    }
    assert axes == {1, 2}
    with pytest.raises(ValueError, match="Ghosting: axes must be spatial axes"):
        tio.Ghosting(axes=(3,))
    with pytest.raises(ValueError, match="Ghosting intensity must be at most 1"):
        tio.Ghosting(intensity=2)


def test_motion_without_motion_is_the_identity_and_keeps_segment_zero() -> None:
    x = _volume((1, 15, 12, 10))
    assert torch.equal(tio.Motion(degrees=0, translation=0)(x), x)
    subject = tio.Motion(degrees=5, translation=(2, 3), num_transforms=2, seed=1)(
        tio.Subject(t1=tio.ScalarImage(x))
    )
    moves = subject.applied_transforms[0].params["transforms"]
    assert len(moves) == 2 and all(-5 <= d <= 5 for m in moves for d in m["degrees"])
    # k-space planes 0..4 come from the still image, 5..9 and 10..14 from the moved ones;
    # the image is the real part of the inverse FFT of that spectrum
    composed = np.fft.fftn(x.numpy(), axes=(1, 2, 3))
    for number, (a, b) in enumerate([(5, 10), (10, 15)]):
        moved = rigid_resample(x, moves[number]["degrees"], moves[number]["translation"])
        composed[:, a:b] = np.fft.fftn(moved.numpy(), axes=(1, 2, 3))[:, a:b]
    expected = np.fft.ifftn(composed, axes=(1, 2, 3)).real
    np.testing.assert_allclose(subject.t1.numpy(), expected, atol=1e-5)
    assert np.abs(subject.t1.numpy() - x.numpy()).max() > 0.05


def test_rigid_resampling_of_an_integer_translation_is_a_shift() -> None:
    x = _volume((1, 8, 7, 6))
    moved = rigid_resample(x, (0, 0, 0), (2, -1, 0))
    expected = torch.zeros_like(x)
    expected[0, 2:, :-1] = x[0, :-2, 1:]
    torch.testing.assert_close(moved, expected, atol=1e-6, rtol=0)
    # 90 degrees about K, centred: the output at (i, j) shows the input at (j, 2 - i)
    grid = torch.arange(9.0).reshape(1, 3, 3, 1).double()
    quarter = rigid_resample(grid, (0, 0, 90), (0, 0, 0))[0, :, :, 0]
    expected = torch.tensor([[3.0 * j + 2 - i for j in range(3)] for i in range(3)])
    torch.testing.assert_close(quarter, expected.double(), atol=1e-5, rtol=0)


def test_motion_bad_inputs() -> None:
    with pytest.raises(ValueError, match="num_transforms must be a positive int"):
        tio.Motion(num_transforms=0)
    with pytest.raises(ValueError, match="too few for 4 k-space segments"):
        tio.Motion(num_transforms=3)(torch.rand(1, 3, 5, 5))


def test_kspace_transforms_are_whole_volume_and_keep_labels() -> None:
    subject = tio.Subject(
        t1=tio.ScalarImage(_volume()),
        seg=tio.LabelMap(torch.ones(1, 16, 12, 10, dtype=torch.uint8)),
    )
    for transform in (tio.Motion(), tio.Ghosting(intensity=0.5), tio.Spike(intensity=1.0)):
        assert not transform.lazy and not transform.patchwise
        out = transform(subject)
        assert out.t1.is_loaded and torch.equal(out.seg.data, subject.seg.data)
        assert out.t1.dtype == torch.float64 and not torch.equal(out.t1.data, subject.t1.data)
