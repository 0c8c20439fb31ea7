"""HistogramStandardization: training against NumPy's computation of TorchIO's algorithm,
landmarks saved and loaded, the piecewise-linear map."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio

PERCENTILES = [1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 99]


def _numpy_landmarks(arrays: list[np.ndarray], masks: list[np.ndarray] | None = None) -> np.ndarray:
    """TorchIO's training, written out with NumPy."""
    table = []
    for n, array in enumerate(arrays):
        values = array if masks is None else array[masks[n]]
        table.append(np.percentile(values, PERCENTILES))
    table = np.array(table)
    slopes = 100 / (table[:, -1] - table[:, 0])
    intercept = np.mean(0 - slopes * table[:, 0])
    return slopes @ table / len(table) + intercept


def _numpy_apply(array: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """TorchIO 2.0's map: segments between the image's percentiles, outer ones extended."""
    inputs = np.percentile(array, PERCENTILES)
    slopes = np.diff(landmarks) / np.diff(inputs)
    intercepts = landmarks[:-1] - slopes * inputs[:-1]
    segment = np.searchsorted(inputs[1:-1], array, side="left")
    return slopes[segment] * array + intercepts[segment]


@pytest.fixture
def training(tmp_path: Path) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(7)
    paths, arrays = [], []
    for n in range(3):
        array = (rng.gamma(2.0 + n, 50.0 * (n + 1), size=(12, 11, 10))).astype(np.float32)
        path = tmp_path / f"t1_{n}.nii.gz"
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
        paths.append(path)
        arrays.append(array.astype(np.float64))
    return paths, arrays


def test_training_equals_torchio_algorithm(training, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths, arrays = training
    landmarks = tio.HistogramStandardization.train(paths, progress=False)
    np.testing.assert_allclose(landmarks.numpy(), _numpy_landmarks(arrays), rtol=1e-12)
    assert landmarks[0] == pytest.approx(0, abs=1e-9) and landmarks[-1] == pytest.approx(100)
    images = [tio.ScalarImage(p) for p in paths]
    again = tio.transforms.compute_histogram_landmarks(images, progress=False)
    torch.testing.assert_close(again, landmarks)
    assert not any(image.is_loaded for image in images)  # streamed, never cached
    masks = [a > np.median(a) for a in arrays]
    mask_paths = []
    for n, mask in enumerate(masks):
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), tmp_path / f"m{n}.nii")
        mask_paths.append(tmp_path / f"m{n}.nii")
    masked = tio.HistogramStandardization.train(paths, mask_path=mask_paths, progress=False)
    np.testing.assert_allclose(masked.numpy(), _numpy_landmarks(arrays, masks), rtol=1e-12)
    by_function = tio.HistogramStandardization.train(
        paths, masking_function=lambda t: t > t.median(), progress=False
    )
    assert not torch.allclose(by_function, landmarks)


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".txt", ".json"])
def test_landmarks_saved_and_loaded(training, tmp_path: Path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    paths, arrays = training
    path = tmp_path / f"landmarks{suffix}"
    landmarks = tio.HistogramStandardization.train(paths, output_path=path, progress=False)
    assert path.is_file()
    by_file = tio.HistogramStandardization(path)
    torch.testing.assert_close(by_file.landmarks, landmarks)
    subject = tio.Subject(t1=tio.ScalarImage(paths[1]))
    out = by_file(subject)
    expected = _numpy_apply(arrays[1], landmarks.numpy())
    np.testing.assert_allclose(out.t1.numpy()[0], expected, rtol=1e-5, atol=1e-4)


def test_torchio_1x_dictionary_of_landmarks(training, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths, arrays = training
    landmarks = tio.HistogramStandardization.train(paths, progress=False).numpy()
    np.save(tmp_path / "t1.npy", landmarks)
    table = {"t1": str(tmp_path / "t1.npy"), "t2": landmarks}
    torch.save(
        {k: torch.as_tensor(np.load(tmp_path / "t1.npy")) for k in ("t1",)}, tmp_path / "d.pt"
    )
    subject = tio.Subject(t1=tio.ScalarImage(paths[0]), t2=tio.ScalarImage(paths[2]))
    out = tio.HistogramStandardization(table)(subject)
    np.testing.assert_allclose(
        out.t2.numpy()[0], _numpy_apply(arrays[2], landmarks), rtol=1e-5, atol=1e-4
    )
    only_t1 = tio.HistogramStandardization(tmp_path / "d.pt")(subject)
    assert only_t1.t2 is subject.t2 and not only_t1.t1.is_loaded
    with pytest.raises(KeyError, match="no landmarks for 't2'"):
        tio.HistogramStandardization(tmp_path / "d.pt", include=["t2"])(subject)


def test_bad_landmarks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such landmarks file"):
        tio.HistogramStandardization(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="increasing"):
        tio.HistogramStandardization(torch.tensor([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="13 quantiles"):
        tio.HistogramStandardization(torch.linspace(0, 100, 5))
    (tmp_path / "l.csv").write_text("1,2")
    with pytest.raises(ValueError, match="not '.csv'"):
        tio.HistogramStandardization(tmp_path / "l.csv")
    with pytest.raises(ValueError, match="no training images"):
        tio.HistogramStandardization.train([])
    with pytest.raises(ValueError, match="cutoff must be two quantiles"):
        tio.HistogramStandardization(torch.linspace(0, 100, 13), cutoff=(0.5, 0.2))
