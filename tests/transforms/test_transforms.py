"""Transforms: values, probabilities, seeds, inputs of every kind, labels never noised."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from conftest import assert_affine_follows, random_affine


@pytest.fixture
def subject(rng: np.random.Generator) -> tio.Subject:
    t1 = torch.from_numpy(rng.normal(10, 3, size=(2, 6, 5, 4)).astype(np.float32))
    seg = torch.from_numpy(rng.integers(0, 3, size=(1, 6, 5, 4)).astype(np.uint8))
    affine = random_affine(rng)
    return tio.Subject(
        t1=tio.ScalarImage(t1, affine=affine), seg=tio.LabelMap(seg, affine=affine), age=40
    )


def _snapshot(subject: tio.Subject) -> dict[str, torch.Tensor]:
    return {name: image.data.clone() for name, image in subject.images.items()}


def test_flip_moves_every_image_alike_and_leaves_input(subject: tio.Subject) -> None:
    before = _snapshot(subject)
    out = tio.Flip(axes=(0, 2))(subject)
    for name in ("t1", "seg"):
        np.testing.assert_array_equal(out[name].numpy(), before[name].numpy()[:, ::-1, :, ::-1])
        np.testing.assert_array_equal(out[name].affine, subject[name].affine)
        torch.testing.assert_close(subject[name].data, before[name])  # input untouched
    assert out["age"] == 40 and out.seg.data.dtype == torch.uint8


def test_probability_p_and_seeds(subject: tio.Subject) -> None:
    flip = tio.Flip(axes=(0,), p=0.3, seed=5)
    flipped = [not torch.equal(flip(subject).t1.data, subject.t1.data) for _ in range(2000)]
    assert 0.26 < np.mean(flipped) < 0.34
    assert tio.Flip(p=0.0)(subject) is subject
    with pytest.raises(ValueError, match="p must be in"):
        tio.Noise(p=1.5)
    pipeline = lambda: tio.Compose([tio.Flip(axes=(1,), p=0.5), tio.Noise(std=(0.1, 0.5))], seed=9)  # noqa: E731
    a, b = pipeline(), pipeline()
    for _ in range(5):
        torch.testing.assert_close(a(subject).t1.data, b(subject).t1.data)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(a(subject, g1).t1.data, b(subject, g2).t1.data)


def test_noise_statistics_and_labels_never_noised(subject: tio.Subject) -> None:
    big = tio.Subject(
        t1=tio.ScalarImage(torch.zeros(1, 40, 40, 40, dtype=torch.int16)),
        seg=tio.LabelMap(torch.ones(1, 40, 40, 40, dtype=torch.uint8)),
    )
    out = tio.Noise(mean=1.0, std=0.5, seed=0)(big)
    assert out.t1.data.dtype == torch.float32
    assert abs(out.t1.data.mean().item() - 1.0) < 0.01
    assert abs(out.t1.data.std().item() - 0.5) < 0.01
    assert torch.equal(out.seg.data, big.seg.data)
    assert tio.Noise().output_dtype("intensity", torch.int16) == torch.float32
    assert tio.Noise().output_dtype("label", torch.int16) == torch.int16


def test_rescale_intensity() -> None:
    data = torch.arange(101, dtype=torch.float32).reshape(1, 101, 1, 1)
    out = tio.RescaleIntensity((-1, 1))(data)
    assert out.min().item() == -1 and out.max().item() == 1
    out = tio.RescaleIntensity((0, 1), percentiles=(10, 90))(data)
    assert out[0, 10].item() == pytest.approx(0) and out[0, 90].item() == pytest.approx(1)
    fixed = tio.RescaleIntensity((0, 1), in_min_max=(0, 200))
    assert fixed.patchwise and not tio.RescaleIntensity().patchwise
    assert fixed(data)[0, 100].item() == pytest.approx(0.5)
    assert tio.RescaleIntensity((2, 3))(torch.full((1, 2, 2, 2), 7.0)).unique().tolist() == [2.0]


def test_znormalization_masked_and_precomputed() -> None:
    rng = np.random.default_rng(1)
    t1 = torch.from_numpy(rng.normal(50, 10, size=(1, 20, 20, 20)))
    mask = torch.zeros(1, 20, 20, 20, dtype=torch.uint8)
    mask[0, :10] = 1
    t1[0, 10:] += 1000  # outside the mask: must not affect the statistics
    subject = tio.Subject(t1=tio.ScalarImage(t1), brain=tio.LabelMap(mask))
    out = tio.ZNormalization(masking_method="brain")(subject).t1.data
    inside = out[0, :10]
    # TorchIO's standard deviation: with Bessel's correction
    assert abs(inside.mean().item()) < 1e-9 and abs(inside.std(correction=1).item() - 1) < 1e-9
    assert torch.equal(tio.ZNormalization(masking_method="brain")(subject).brain.data, mask)
    by_function = tio.ZNormalization(masking_method=lambda x: x < 500)(subject).t1.data
    torch.testing.assert_close(by_function, out)
    fixed = tio.ZNormalization(mean=50, std=10)
    assert fixed.patchwise and not tio.ZNormalization().patchwise
    torch.testing.assert_close(fixed(t1), (t1 - 50) / 10)
    with pytest.raises(ValueError, match="constant region"):
        tio.ZNormalization()(torch.ones(1, 3, 3, 3))
    with pytest.raises(KeyError, match="masking image 'mask'"):
        tio.ZNormalization(masking_method="mask")(subject)
    with pytest.raises(ValueError, match="both mean= and std="):
        tio.ZNormalization(mean=1)


def test_clamp_and_lambda(subject: tio.Subject) -> None:
    out = tio.Clamp(9, 11)(subject)
    assert out.t1.data.min() >= 9 and out.t1.data.max() <= 11
    assert torch.equal(out.seg.data, subject.seg.data)
    double = tio.Lambda(lambda x: x * 2, types_to_apply=("intensity",))
    out = double(subject)
    torch.testing.assert_close(out.t1.data, subject.t1.data * 2)
    assert torch.equal(out.seg.data, subject.seg.data)
    assert not double.patchwise and tio.Lambda(torch.abs, patchwise=True).patchwise
    with pytest.raises(ValueError, match="must return a 4-D tensor"):
        tio.Lambda(lambda x: x.sum())(subject)


def test_crop_pad_crop_or_pad_values_and_affines(subject: tio.Subject) -> None:
    crop = tio.Crop((1, 2, 0, 1, 2, 0))(subject)
    np.testing.assert_array_equal(crop.t1.numpy(), subject.t1.numpy()[:, 1:4, 0:4, 2:4])
    assert_affine_follows(
        crop.t1, subject.t1.affine, [np.arange(1, 4), np.arange(0, 4), np.arange(2, 4)]
    )
    pad = tio.Pad((1, 0, 0, 2, 0, 0), padding_mode=-5)(subject)
    assert pad.t1.shape == (2, 7, 7, 4)
    assert (pad.t1.data[:, 0] == -5).all() and (pad.seg.data[:, 0] == 0).all()
    np.testing.assert_array_equal(pad.t1.numpy()[:, 1:, :5], subject.t1.numpy())
    assert_affine_follows(pad.t1, subject.t1.affine, [np.arange(-1, 6), np.arange(7), np.arange(4)])
    edge = tio.Pad(1, padding_mode="edge")(subject)
    np.testing.assert_array_equal(edge.seg.numpy()[:, 0, 1:-1, 1:-1], subject.seg.numpy()[:, 0])
    both = tio.CropOrPad((4, 8, 4))(subject)
    assert both.t1.shape == (2, 4, 8, 4)
    np.testing.assert_array_equal(both.t1.numpy()[:, :, 1:6], subject.t1.numpy()[:, 1:5])
    with pytest.raises(ValueError, match="leaves nothing"):
        tio.Crop((3, 3, 0))(subject)
    with pytest.raises(ValueError, match="one, three or six"):
        tio.Pad((1, 2))


def test_crop_keeps_lazy_images_lazy(tmp_path: Path) -> None:
    array = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "t1.nii")
    image = tio.ScalarImage(tmp_path / "t1.nii")
    cropped = tio.Crop(1)(image)
    assert not cropped.is_loaded and not image.is_loaded
    np.testing.assert_array_equal(cropped.numpy()[0], array[1:-1, 1:-1, 1:-1])
    noisy = tio.Noise(std=0)(image)  # the identity: the same lazy image
    assert not image.is_loaded and not noisy.is_loaded
    np.testing.assert_array_equal(noisy.numpy()[0], array)
    noisy = tio.Noise(std=1)(image)  # lazy: computed when read, the input never cached
    assert not noisy.is_loaded and np.abs(noisy.numpy()[0] - array).mean() > 0.5
    assert not image.is_loaded


def test_one_of_weights() -> None:
    choose = tio.OneOf({tio.Lambda(lambda x: x + 1): 0.8, tio.Lambda(lambda x: x - 1): 0.2}, seed=2)
    results = [choose(torch.zeros(1, 1, 1, 1)).item() for _ in range(2000)]
    assert 0.76 < np.mean(np.asarray(results) == 1) < 0.84
    with pytest.raises(TypeError, match="wrap functions with tio.Lambda"):
        tio.OneOf([abs])  # type: ignore[list-item]


def test_inputs_of_every_kind(subject: tio.Subject) -> None:
    flip = tio.Flip(axes=(1,))
    image = flip(subject.t1)
    assert isinstance(image, tio.ScalarImage)
    np.testing.assert_array_equal(image.numpy(), subject.t1.numpy()[:, :, ::-1])
    array = flip(subject.t1.numpy())
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, subject.t1.numpy()[:, :, ::-1])
    batch_tensor = torch.rand(3, 1, 4, 4, 4)
    torch.testing.assert_close(flip(batch_tensor), batch_tensor.flip(3))
    with pytest.raises(ValueError, match=r"\(C, I, J, K\) or \(B, C, I, J, K\)"):
        flip(torch.rand(4, 4))
    with pytest.raises(TypeError, match="cannot transform a str"):
        flip("t1.nii")  # type: ignore[arg-type]


def test_batch_elements_get_their_own_parameters() -> None:
    subjects = [
        tio.Subject(
            t1=tio.ScalarImage(torch.arange(4.0).reshape(1, 4, 1, 1) + 10 * n),
            seg=tio.LabelMap(torch.arange(4).reshape(1, 4, 1, 1).to(torch.uint8)),
            index=n,
        )
        for n in range(64)
    ]
    batch = tio.SubjectsBatch.from_subjects(subjects)
    out = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.01)], seed=4)(batch)
    assert isinstance(out, tio.SubjectsBatch) and out.metadata["index"] == list(range(64))
    assert out.t1.data.device == batch.t1.data.device
    flipped = out.seg.data[:, 0, 0, 0, 0] == 3
    assert 16 < int(flipped.sum()) < 48  # per element, not one coin for the batch
    for n in range(64):  # the same flip for t1 and seg of an element; labels not noised
        expected = batch.t1.data[n].flip(1) if flipped[n] else batch.t1.data[n]
        torch.testing.assert_close(out.t1.data[n], expected, atol=0.1, rtol=0)
        assert set(out.seg.data[n].flatten().tolist()) == {0, 1, 2, 3}
    images = tio.Flip(axes=(0,))(batch.t1)
    assert isinstance(images, tio.ImagesBatch)
    torch.testing.assert_close(images.data, batch.t1.data.flip(2))


def test_compose_split_for_the_queue() -> None:
    """The subject part ends at the last whole-volume transform and the lazy ones after it
    (exact patches, nothing read); from the first patchwise transform that is not lazy,
    the rest runs on patches."""
    on_patches = tio.Lambda(torch.abs, patchwise=True)
    pipeline = tio.Compose([tio.CropOrPad(8), tio.ZNormalization(), tio.Noise(), on_patches])
    whole, patch = pipeline.split()
    assert [type(t).__name__ for t in whole.transforms] == ["CropOrPad", "ZNormalization", "Noise"]
    assert [type(t).__name__ for t in patch.transforms] == ["Lambda"]
    whole, patch = tio.Compose([tio.Crop(1), on_patches, tio.Noise()]).split()
    assert [type(t).__name__ for t in patch.transforms] == ["Lambda", "Noise"]
    assert tio.Compose([on_patches, tio.Noise()]).split()[0] is None
    assert tio.Compose([tio.Noise(), tio.Crop(1)]).split()[1] is None
    maybe = tio.Compose([tio.Crop(1), tio.Flip()], p=0.5)
    assert maybe.split() == (maybe, None)
    assert tio.Compose([on_patches], p=0.5).split()[0] is None
