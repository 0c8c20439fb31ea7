"""Intensity transforms: values against NumPy/SciPy oracles, patches equal to the whole."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from equivalence import check_lazy_transform
from scipy import ndimage

import voxelflow as tio
from voxelflow.transforms.intensity.bias_field import coarse_field, exponents


# ---------------------------------------------------------------- subjects
def _affine(spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 2.5)
    return affine


@pytest.fixture
def arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A 2-channel intensity volume of odd and even sizes (with negative values) and a
    label map, as (C, I, J, K)."""
    t1 = rng.normal(20, 8, size=(2, 11, 10, 9)).astype(np.float32)
    t1[:, :3] *= -1
    seg = np.zeros((1, 11, 10, 9), dtype=np.uint8)
    seg[0, 2:8, 1:9, 3:7] = 1
    seg[0, 5:10, 4:6, 0:4] = 2
    return {"t1": t1, "seg": seg}


@pytest.fixture
def files(tmp_path: Path, arrays: dict[str, np.ndarray]) -> tio.Subject:
    """The same volumes as lazy .nii files (anisotropic spacing)."""
    affine = _affine((1.0, 2.0, 0.5))
    nib.save(nib.Nifti1Image(np.moveaxis(arrays["t1"], 0, -1), affine), tmp_path / "t1.nii")
    nib.save(nib.Nifti1Image(arrays["seg"][0], affine), tmp_path / "seg.nii")
    return tio.Subject(
        t1=tio.ScalarImage(tmp_path / "t1.nii"), seg=tio.LabelMap(tmp_path / "seg.nii")
    )


@pytest.fixture
def tensors(arrays: dict[str, np.ndarray]) -> tio.Subject:
    affine = _affine((1.0, 2.0, 0.5))
    return tio.Subject(
        t1=tio.ScalarImage(torch.from_numpy(arrays["t1"].astype(np.float64)), affine=affine),
        seg=tio.LabelMap(torch.from_numpy(arrays["seg"]), affine=affine),
    )


def _landmarks() -> torch.Tensor:
    return torch.tensor([0.0, 5, 12, 20, 25, 30, 45, 55, 70, 75, 80, 90, 100])


LAZY = [
    tio.Noise(std=0.5),
    tio.Noise(mean=(1, 2), std=(0.2, 0.4), rician=True),
    tio.Gamma(log_gamma=(-0.4, 0.4)),
    tio.BiasField(coefficients=(-0.5, 0.5)),
    tio.BiasField(std=0.6, scale=0.3),
    tio.Blur(std=(1.5, 0.0, 2.0)),
    tio.Blur(std=(0.5, 3.0)),
    tio.Normalize(percentile_low=1, percentile_high=99),
    tio.Normalize(out_min=0, out_max=1, in_min=-20, in_max=40),
    tio.RescaleIntensity((0, 1), percentiles=(2, 98)),
    tio.Standardize(),
    tio.ZNormalization(masking_method="seg"),
    tio.Mask(masking_method="seg", labels=[2], outside_value=-5),
    tio.HistogramStandardization(_landmarks(), include=["t1"]),
    tio.Clamp(-10, 30),
]


@pytest.mark.parametrize("transform", LAZY, ids=repr)
def test_lazy_patch_equals_the_whole_exactly(transform: tio.Transform, files: tio.Subject) -> None:
    """At every corner, edge, face and the centre, odd and even sizes: bit for bit."""
    assert transform.lazy
    out = check_lazy_transform(transform, files, seed=3, rtol=0, atol=0)
    assert out.seg is not files.seg or torch.equal(out.seg.data, files.seg.data)
    torch.testing.assert_close(out.seg.data, files.seg.data, rtol=0, atol=0)  # labels untouched
    assert out.t1.dtype == torch.float32


@pytest.mark.parametrize("transform", LAZY, ids=repr)
def test_a_patch_reads_only_its_footprint(
    transform: tio.Transform, tmp_path: Path, arrays: dict[str, np.ndarray], strict_backend
) -> None:  # type: ignore[no-untyped-def]
    """Behind a backend that refuses whole reads: statistics stream in slabs, a patch
    reads its region plus the halo only."""
    affine = _affine((1.0, 2.0, 0.5))
    nib.save(nib.Nifti1Image(np.moveaxis(arrays["t1"], 0, -1), affine), tmp_path / "t1.strict.nii")
    nib.save(nib.Nifti1Image(arrays["seg"][0], affine), tmp_path / "seg.strict.nii")
    subject = tio.Subject(
        t1=tio.ScalarImage(tmp_path / "t1.strict.nii"),
        seg=tio.LabelMap(tmp_path / "seg.strict.nii"),
    )
    out = transform(subject, torch.Generator().manual_seed(0))
    strict_backend.log.clear()
    patch = out.t1[:, 4:7, 3:5, 2:6].data
    assert patch.shape == (2, 3, 2, 4)
    for box in strict_backend.log:  # the blur's halo at most: radius ceil(3σ/spacing)
        sizes = [s.stop - s.start for s in box[1:]]
        assert sizes[0] <= 3 + 2 * 5 and sizes[1] <= 2 + 2 * 5 and sizes[2] <= 4 + 2 * 18


# ---------------------------------------------------------------- oracles
def test_gamma_formula_and_inverse(tensors: tio.Subject) -> None:
    out = tio.Gamma(log_gamma=0.3)(tensors)
    x = tensors.t1.numpy()
    np.testing.assert_allclose(out.t1.numpy(), np.sign(x) * np.abs(x) ** math.exp(0.3), rtol=1e-12)
    back = out.apply_inverse_transform()
    np.testing.assert_allclose(back.t1.numpy(), x, rtol=1e-10)
    drawn = tio.Gamma(log_gamma=(-0.3, 0.3))(tensors).applied_transforms[0].params["log_gamma"]
    assert -0.3 <= drawn <= 0.3
    ints = tio.Gamma(log_gamma=0.5)(torch.tensor([[[[0, 4]]]], dtype=torch.int16))
    assert ints.dtype == torch.float32 and ints.flatten().tolist() == pytest.approx(
        [0, 4 ** math.exp(0.5)]
    )


def _torchio_1x_bias_field(
    shape: tuple[int, ...], order: int, coefficients: list[float]
) -> np.ndarray:
    """TorchIO 1.x's polynomial field, written as 1.x writes it (meshgrid and transpose)."""
    half = np.array(shape) / 2
    ranges = [np.arange(-n, n) + 0.5 for n in half]
    meshes = np.asarray(np.meshgrid(*ranges))
    for mesh in meshes:
        if mesh.max() > 0:
            mesh /= mesh.max()
    x, y, z = meshes
    field = np.zeros(shape)
    i = 0
    for a in range(order + 1):
        for b in range(order + 1 - a):
            for c in range(order + 1 - (a + b)):
                field += np.transpose(coefficients[i] * x**a * y**b * z**c, (1, 0, 2))
                i += 1
    return np.exp(field)


@pytest.mark.parametrize("shape", [(11, 10, 9), (4, 7, 1)])
def test_polynomial_bias_field_is_torchio_1x(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    data = rng.uniform(1, 2, size=(1, *shape))
    transform = tio.BiasField(coefficients=(-0.6, 0.6), order=3)
    subject = transform(tio.Subject(t1=tio.ScalarImage(torch.from_numpy(data))))
    coefficients = subject.applied_transforms[0].params["coefficients"]
    assert len(coefficients) == 20 and all(-0.6 <= c <= 0.6 for c in coefficients)
    expected = data * _torchio_1x_bias_field(shape, 3, coefficients)[None]
    np.testing.assert_allclose(subject.t1.numpy(), expected, rtol=1e-12)
    assert exponents(1) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]  # TorchIO's order
    back = subject.apply_inverse_transform()
    np.testing.assert_allclose(back.t1.numpy(), data, rtol=1e-12)


def test_smooth_bias_field_is_trilinear_upsampling_of_the_coarse_grid() -> None:
    data = torch.rand(2, 30, 21, 12, dtype=torch.float64) + 1
    subject = tio.BiasField(std=0.7, scale=0.2)(tio.Subject(t1=tio.ScalarImage(data)))
    params = subject.applied_transforms[0].params
    coarse = coarse_field(params["seed"], params["std"], params["scale"], data.shape)
    assert tuple(coarse.shape) == (2, 6, 4, 4)  # max(round(n * scale), 4) per axis
    field = torch.nn.functional.interpolate(
        coarse[None], size=(30, 21, 12), mode="trilinear", align_corners=True
    )[0].exp()
    torch.testing.assert_close(subject.t1.data, data * field, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(coarse.std().item(), 0.7, rtol=0.5)
    back = subject.apply_inverse_transform()
    torch.testing.assert_close(back.t1.data, data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("std", [(1.5, 0.0, 2.0), (0.3, 0.3, 0.3), (4.0, 1.0, 0.7)])
def test_blur_is_scipy_gaussian_filter(tensors: tio.Subject, std: tuple[float, ...]) -> None:
    """Std in mm over spacing (1, 2, 0.5); TorchIO 2.0's radius ceil(3σ), borders replicated."""
    out = tio.Blur(std=std)(tensors)
    sigmas = [s / d for s, d in zip(std, (1.0, 2.0, 0.5), strict=True)]
    radii = [max(math.ceil(3 * s), 1) if s > 0 else 0 for s in sigmas]
    x = tensors.t1.numpy()
    expected = np.stack(
        [ndimage.gaussian_filter(c, sigmas, mode="nearest", radius=radii) for c in x]
    )
    np.testing.assert_allclose(out.t1.numpy(), expected, rtol=1e-10, atol=1e-10)
    assert tio.Blur(std=(0, 2))(tensors).applied_transforms[0].params["std"][2] <= 2


def test_normalize_clips_and_maps_percentiles(tensors: tio.Subject) -> None:
    x = tensors.t1.numpy()
    out = tio.Normalize(percentile_low=5, percentile_high=95)(tensors)
    low, high = np.percentile(x, [5, 95])
    expected = (np.clip(x, low, high) - low) / (high - low) * 2 - 1
    np.testing.assert_allclose(out.t1.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert out.applied_transforms[0].params["in_ranges"]["t1"] == [low, high]
    masked = tio.Normalize(out_min=0, out_max=1, percentile_high=50, masking_method="seg")(tensors)
    inside = x[np.broadcast_to(tensors.seg.numpy() != 0, x.shape)]
    low, high = inside.min(), np.percentile(inside, 50)
    np.testing.assert_allclose(masked.t1.numpy(), (np.clip(x, low, high) - low) / (high - low))
    fixed = tio.Normalize(in_min=0, in_max=10, out_min=(0, 1))
    assert fixed.patchwise and not tio.Normalize().patchwise
    back = out.apply_inverse_transform()
    np.testing.assert_allclose(back.t1.numpy(), np.clip(x, *np.percentile(x, [5, 95])), rtol=1e-9)


def test_rescale_intensity_is_torchio_1x(tensors: tio.Subject) -> None:
    x = tensors.t1.numpy()
    out = tio.RescaleIntensity(out_min_max=1, percentiles=(1, 99))(tensors)
    low, high = np.percentile(x, [1, 99])
    np.testing.assert_allclose(out.t1.numpy(), (np.clip(x, low, high) - low) / (high - low) * 2 - 1)
    fixed = tio.RescaleIntensity((0, 1), in_min_max=(-100, 100))(tensors)
    np.testing.assert_allclose(fixed.t1.numpy(), (x + 100) / 200)  # not clipped to in_min_max
    assert tio.RescaleIntensity(percentiles=90).percentiles == (0.0, 90.0)


def test_standardize_uses_torchio_statistics(tensors: tio.Subject) -> None:
    x = tensors.t1.numpy()
    out = tio.Standardize()(tensors)
    np.testing.assert_allclose(out.t1.numpy(), (x - x.mean()) / x.std(ddof=1), rtol=1e-10)
    inside = x[np.broadcast_to(tensors.seg.numpy() != 0, x.shape)]
    masked = tio.ZNormalization(masking_method="seg")(tensors)
    np.testing.assert_allclose(
        masked.t1.numpy(), (x - inside.mean()) / inside.std(ddof=1), rtol=1e-10
    )
    assert masked.applied_transforms[0].params["stats"]["t1"] == pytest.approx(
        [inside.mean(), inside.std(ddof=1)]
    )
    back = masked.apply_inverse_transform()
    np.testing.assert_allclose(back.t1.numpy(), x, rtol=1e-9, atol=1e-9)
    by_function = tio.Standardize(masking_method=lambda t: t > t.mean())(tensors)
    above = x[x > x.mean()]
    np.testing.assert_allclose(by_function.t1.numpy(), (x - above.mean()) / above.std(ddof=1))


def test_mask(tensors: tio.Subject) -> None:
    x, seg = tensors.t1.numpy(), tensors.seg.numpy()
    out = tio.Mask(masking_method="seg")(tensors)
    np.testing.assert_array_equal(out.t1.numpy(), np.where(seg != 0, x, 0))
    out = tio.Mask(masking_method="seg", labels=[2], outside_value=-3)(tensors)
    np.testing.assert_array_equal(out.t1.numpy(), np.where(seg == 2, x, -3))
    out = tio.Mask(masking_method=lambda t: t > 25)(tensors)
    np.testing.assert_array_equal(out.t1.numpy(), np.where(x > 25, x, 0))


def test_intensity_transforms_on_a_batch_stay_on_its_device(tensors: tio.Subject) -> None:
    batch = tio.SubjectsBatch.from_subjects([tensors, tensors])
    out = tio.Compose([tio.Blur(std=1.0), tio.Noise(std=0.1), tio.Gamma(log_gamma=0.1)])(batch)
    assert out.t1.data.shape == batch.t1.data.shape
    assert not torch.equal(out.t1.data[0], out.t1.data[1])  # each element its own noise
    assert torch.equal(out.seg.data, batch.seg.data)


# ---------------------------------------------------------------- bad input
def test_a_label_map_in_include_is_a_clear_error(files: tio.Subject) -> None:
    for transform in (tio.Noise(include=["seg"]), tio.Blur(std=1, include=["t1", "seg"])):
        with pytest.raises(TypeError, match=r"'seg' \(.*seg.nii\) is a label map.*include="):
            transform(files)
    with pytest.raises(TypeError, match="Gamma: 'seg'.*changes intensities only"):
        tio.Gamma(log_gamma=0.1, include=["seg"])(files)


def test_bad_parameters_name_the_transform_and_parameter() -> None:
    cases = [
        (lambda: tio.Noise(std=-1), "Noise std must be at least 0"),
        (lambda: tio.Blur(std=(2, 1)), "Blur std: a range must be"),
        (lambda: tio.BiasField(order=-1), "BiasField order must be"),
        (lambda: tio.BiasField(coefficients=[1, 2, 3, 4, 5]), "order 3 has 20 coefficients"),
        (lambda: tio.BiasField(coefficients=0.1, std=0.2), "not both"),
        (lambda: tio.BiasField(scale=0), "scale must be in"),
        (lambda: tio.Normalize(percentile_high=101), "percentile_high must be at most 100"),
        (lambda: tio.RescaleIntensity(percentiles=(5, 120)), "percentiles must lie in"),
        (lambda: tio.Standardize(std=0, mean=1), "std must be positive"),
        (lambda: tio.Mask(masking_method=None), "masking_method must name"),
        (lambda: tio.Standardize(masking_method=3), "masking_method must be None"),  # type: ignore[arg-type]
        (lambda: tio.Clamp(2, 1), "out_min 2 > out_max 1"),
    ]
    for make, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            make()


def test_bad_data_names_the_image(tensors: tio.Subject, files: tio.Subject) -> None:
    with pytest.raises(KeyError, match="masking image 'brain' not in the subject"):
        tio.Mask()(tensors)
    with pytest.raises(ValueError, match="constant region"):
        tio.Standardize()(tio.ScalarImage(torch.ones(1, 3, 3, 3)))
    empty = tio.Subject(t1=files.t1, seg=tio.LabelMap(torch.zeros(1, 11, 10, 9)))
    with pytest.raises(ValueError, match=r"Standardize: 't1' \(.*t1.nii\): the mask selects no"):
        tio.Standardize(masking_method="seg")(empty)
    other = tio.Subject(t1=files.t1, seg=tio.LabelMap(torch.ones(1, 5, 5, 5)))
    with pytest.raises(ValueError, match="resample the mask"):
        tio.Mask(masking_method="seg")(other)
    flat = tio.ScalarImage(torch.rand(1, 4, 4, 4), affine=np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="Blur: 'image' has spacing"):
        tio.Blur(std=1)(flat)


def test_same_seed_same_parameters_and_values(files: tio.Subject) -> None:
    pipeline = lambda: tio.Compose(  # noqa: E731
        [
            tio.Gamma(log_gamma=(-0.3, 0.3)),
            tio.BiasField(coefficients=(-0.3, 0.3)),
            tio.Blur(std=(0, 2)),
            tio.Noise(std=(0, 1)),
        ],
        seed=11,
    )
    a, b = pipeline()(files), pipeline()(files)
    assert [e.params for e in a.applied_transforms] == [e.params for e in b.applied_transforms]
    assert torch.equal(a.t1.data, b.t1.data)
    c = pipeline()
    c(files)
    assert not torch.equal(c(files).t1.data, a.t1.data)  # the generator moved on


@pytest.mark.parametrize("transform", LAZY, ids=repr)
def test_lazy_results_pickle_for_dataloader_workers(
    transform: tio.Transform, files: tio.Subject
) -> None:
    import pickle

    out = transform(files, torch.Generator().manual_seed(5))
    again = pickle.loads(pickle.dumps(out))
    box = (slice(None), slice(2, 9), slice(0, 4), slice(5, 9))
    assert not again.t1.is_loaded
    assert torch.equal(again.t1[box].data, out.t1.data[box])


@pytest.mark.parametrize("transform", LAZY, ids=repr)
def test_the_whole_volume_path_for_device_tensors_gives_the_same_values(
    transform: tio.Transform, tensors: tio.Subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images on a GPU are transformed at once on their device by the same region function
    (with the border padded on the device); on the CPU, that path equals the lazy one."""
    from voxelflow.transforms.intensity import base

    lazy = transform(tensors, torch.Generator().manual_seed(2))
    monkeypatch.setattr(base, "on_device", lambda image: image.is_loaded)
    eager = transform(tensors, torch.Generator().manual_seed(2))
    assert eager.t1.is_loaded
    torch.testing.assert_close(eager.t1.data, lazy.t1.data, rtol=0, atol=0)
