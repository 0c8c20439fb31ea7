"""Whole-volume statistics in bounded memory: equal to NumPy, streamed, cached."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.backends import TensorBackend
from voxelflow.backends.base import Backend
from voxelflow.transforms import statistics
from voxelflow.transforms.statistics import Selection, moments, quantiles, unique_values

QS = [0.0, 0.005, 0.01, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 0.99, 0.995, 1.0]


class Counting(Backend):
    """A backend over a tensor that is not "in memory" (so statistics stream and cache),
    counting its reads and refusing whole ones."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.shape = tuple(tensor.shape)  # type: ignore[assignment]
        self.dtype = tensor.dtype
        self.affine = np.eye(4)
        self.reads: list[int] = []

    def read(self, box=None):  # type: ignore[no-untyped-def]
        assert box is not None, "a whole read"
        self.reads.append(int(np.prod([s.stop - s.start for s in box])))
        return self.tensor[box].clone()


@pytest.fixture(autouse=True)
def small_slabs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slabs of 500 voxels and tight gathering, so small volumes take every path."""
    monkeypatch.setattr(statistics, "SLAB_VOXELS", 500)
    monkeypatch.setattr(statistics, "GATHER_LIMIT", 40)
    statistics.CACHE.clear()


def _cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    zeros = rng.random((1, 15, 14, 13)) < 0.6
    return {
        "float64 normal, 2 channels": rng.normal(size=(2, 9, 11, 13)),
        "float64 mostly zero": np.where(zeros, 0.0, rng.exponential(size=zeros.shape)),
        "float32 negative, zeros": np.where(zeros, 0, -rng.exponential(size=zeros.shape)).astype(
            np.float32
        ),
        "float16": rng.normal(5, 2, size=(1, 10, 9, 8)).astype(np.float16),
        "int16": rng.integers(-5, 300, size=(1, 11, 12, 13)).astype(np.int16),
        "uint8": rng.integers(0, 255, size=(1, 11, 12, 13)).astype(np.uint8),
        "int64 wide": rng.integers(-(10**15), 10**15, size=(1, 7, 8, 9)),
        "ties": np.round(rng.normal(size=(1, 12, 12, 12)), 1),
        "signed zeros": np.array([-0.0, 0.0, -1.0, 1.0, 2.0, -0.0] * 10).reshape(1, 6, 10, 1),
        "one voxel": np.array([[[[3.5]]]]),
    }


def test_quantiles_and_moments_equal_numpy(rng: np.random.Generator) -> None:
    for name, array in _cases(rng).items():
        backend = Counting(torch.from_numpy(array))
        expected = np.quantile(array.astype(np.float64), QS)
        assert quantiles(Selection(backend), QS) == expected.tolist(), name  # exact
        found = moments(Selection(backend))
        values = array.astype(np.float64)
        assert found.count == values.size and found.minimum == values.min(), name
        assert found.maximum == values.max(), name
        np.testing.assert_allclose(found.mean, values.mean(), rtol=1e-12, atol=1e-12, err_msg=name)
        std = values.std(ddof=1) if values.size > 1 else 0.0
        np.testing.assert_allclose(found.std, std, rtol=1e-10, atol=1e-12, err_msg=name)
        assert max(backend.reads) <= max(500, array.shape[0] * np.prod(array.shape[1:3])), name


def test_masked_statistics_equal_numpy(rng: np.random.Generator) -> None:
    for name, array in _cases(rng).items():
        if array.size < 10:
            continue
        spatial = array.shape[1:]
        one = rng.random((1, *spatial)) < 0.3
        per_channel = rng.random(array.shape) < 0.5
        label_map = torch.from_numpy((rng.random((1, *spatial)) < 0.4).astype(np.uint8) * 3)
        for mask, selected in [
            (torch.from_numpy(one), np.broadcast_to(one, array.shape)),
            (torch.from_numpy(per_channel), per_channel),
            (Counting(label_map), np.broadcast_to(label_map.numpy() != 0, array.shape)),
        ]:
            values = array[selected].astype(np.float64)
            chosen = Selection(Counting(torch.from_numpy(array)), mask)
            assert quantiles(chosen, QS) == np.quantile(values, QS).tolist(), name
            np.testing.assert_allclose(moments(chosen).mean, values.mean(), rtol=1e-12)


def test_unique_values(rng: np.random.Generator) -> None:
    labels = rng.choice([0, 3, 7, 250], size=(1, 9, 10, 11)).astype(np.uint8)
    assert unique_values(Selection(Counting(torch.from_numpy(labels)))) == [0, 3, 7, 250]


def test_streamed_from_a_file_never_whole(tmp_path: Path, strict_backend) -> None:  # type: ignore[no-untyped-def]
    array = np.random.default_rng(0).gamma(2.0, 100.0, size=(20, 18, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "v.strict.nii")
    import voxelflow as tio

    backend = tio.ScalarImage(tmp_path / "v.strict.nii").dataobj
    assert (
        quantiles(Selection(backend), [0.02, 0.5, 0.98])
        == np.quantile(array.astype(np.float64), [0.02, 0.5, 0.98]).tolist()
    )
    largest = max(int(np.prod([s.stop - s.start for s in box])) for box in strict_backend.log)
    assert largest <= 20 * 18 * 2  # slabs along K: two planes of 500-voxel budget


def test_two_passes_for_32_bit_values_and_cache(rng: np.random.Generator) -> None:
    array = rng.normal(size=(1, 20, 20, 20)).astype(np.float32)
    backend = Counting(torch.from_numpy(array))
    slabs = len(range(0, 20, 1))  # 500 voxels: one 20×20 plane per slab
    quantiles(Selection(backend), [0.1, 0.9])
    assert len(backend.reads) <= 2 * slabs  # moments + histogram, then the gathering
    before = len(backend.reads)
    quantiles(Selection(backend), [0.1, 0.9])  # cached for this backend
    moments(Selection(backend))  # computed by the first pass
    assert len(backend.reads) == before
    statistics.CACHE.clear()
    quantiles(Selection(backend), [0.1, 0.9])
    assert len(backend.reads) > before


def test_keyed_cache_by_cache_key(rng: np.random.Generator) -> None:
    array = torch.from_numpy(rng.normal(size=(1, 5, 5, 5)))
    first, second = Counting(array), Counting(array.clone() + 1)
    first.cache_key = second.cache_key = ("same file", 1)  # type: ignore[attr-defined]
    a = moments(Selection(first)).mean
    assert moments(Selection(second)).mean == a and not second.reads  # the key decides
    second.cache_key = ("changed file", 2)  # type: ignore[attr-defined]
    assert moments(Selection(second)).mean == pytest.approx(a + 1)


def test_in_memory_tensors_are_not_cached() -> None:
    tensor = torch.zeros(1, 3, 3, 3)
    backend = TensorBackend(tensor)
    assert moments(Selection(backend)).maximum == 0
    tensor[0, 1, 1, 1] = 5  # changed in place: the next statistic sees it
    assert moments(Selection(backend)).maximum == 5


def test_bad_inputs_name_the_image() -> None:
    backend = Counting(torch.ones(1, 3, 3, 3))
    with pytest.raises(ValueError, match="brain.nii: the mask selects no voxel"):
        moments(Selection(backend, torch.zeros(1, 3, 3, 3, dtype=torch.bool), label="brain.nii"))
    with pytest.raises(ValueError, match="spatial shape"):
        Selection(backend, torch.zeros(1, 3, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        quantiles(Selection(backend), [1.5])
    nan = torch.ones(1, 3, 3, 3)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantiles(Selection(Counting(nan)), [0.5])
