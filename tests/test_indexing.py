"""Index normalisation, and slicing checked against NumPy on random shapes and indices.

The property tests use NumPy as the oracle: an integer index keeps its axis
(it becomes a length-1 slice), every other index means what NumPy says. The
same key is applied to images in every storage (.nii memory map, .nii.gz
stream, in-memory tensor, 4-D and 5-D NIfTI layouts), through ``image[key]``
and through ``image.dataobj[key]``; the affine of each result must put every
voxel where its source voxel was.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxelflow as tio
from conftest import assert_affine_follows, nifti_to_cijk, random_affine
from voxelflow._indexing import (
    box_shape,
    compose,
    full_ranges,
    is_whole,
    normalize_index,
    region_affine,
    to_box,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- unit tests
def test_integer_keeps_axis_and_negative_counts_from_end() -> None:
    assert normalize_index((0, -1), (2, 5, 6, 7)) == (range(0, 1), range(4, 5), range(6), range(7))


def test_missing_trailing_indices_mean_all() -> None:
    assert normalize_index(slice(None), (2, 3, 4, 5)) == full_ranges((2, 3, 4, 5))
    assert normalize_index((), (2, 3, 4, 5)) == full_ranges((2, 3, 4, 5))


def test_ellipsis_expands_in_the_middle() -> None:
    ranges = normalize_index((1, ..., slice(2, None)), (2, 3, 4, 5))
    assert ranges == (range(1, 2), range(3), range(4), range(2, 5))
    assert normalize_index(..., (2, 3, 4, 5)) == full_ranges((2, 3, 4, 5))


@pytest.mark.parametrize("key", [(..., 0, ...), (0, 0, 0, 0, 0), (0, 0, 0, ..., 0, 0)])
def test_too_many_indices_or_ellipses_raise_index_error(key: Any) -> None:
    with pytest.raises(tio.VoxelflowIndexError):
        normalize_index(key, (2, 3, 4, 5))


@pytest.mark.parametrize("index", [3, -4, 100])
def test_out_of_range_integer_raises_index_error_naming_axis(index: int) -> None:
    with pytest.raises(IndexError, match=rf"index {index} is out of range for axis i with size 3"):
        normalize_index((0, index), (1, 3, 4, 5))


def test_empty_slice_raises_index_error() -> None:
    with pytest.raises(tio.VoxelflowIndexError, match="selects no voxels"):
        normalize_index((slice(None), slice(2, 2)), (1, 3, 4, 5))


@pytest.mark.parametrize(
    "key",
    [
        [0, 1],
        np.array([0, 1]),
        np.array([True, False, True]),
        True,
        np.bool_(False),
        torch.tensor([0, 1]),
        None,
        1.5,
        "a",
    ],
    ids=["list", "int-array", "bool-array", "bool", "np-bool", "tensor", "None", "float", "str"],
)
def test_fancy_and_boolean_indices_raise_type_error_naming_what_works(key: Any) -> None:
    with pytest.raises(TypeError, match=r"integers, slices \(any step\) and one '...'") as info:
        normalize_index((slice(None), key), (1, 3, 4, 5))
    assert isinstance(info.value, tio.VoxelflowTypeError)
    assert "fancy and boolean indexing are not supported" in str(info.value)


def test_numpy_and_torch_integer_scalars_are_integers() -> None:
    expected = (range(1), range(2, 3), range(1, 2), range(4, 5))
    assert normalize_index((0, np.int64(2), torch.tensor(1), np.uint8(4)), (1, 3, 4, 5)) == expected


def test_to_box_positive_steps_and_flips() -> None:
    ranges = (range(1), range(6, 0, -2), range(1, 8, 3), range(4, 5))
    box, flips = to_box(ranges)
    assert box == (slice(0, 1, 1), slice(2, 7, 2), slice(1, 8, 3), slice(4, 5, 1))
    assert flips == (1,)
    assert box_shape(box) == (1, 3, 3, 1)
    # The box read then flipped gives exactly the ranges' voxels.
    array = np.arange(10)
    np.testing.assert_array_equal(array[box[1]][::-1], np.array(list(ranges[1])))


def test_compose_equals_indexing_twice() -> None:
    parent = (range(2), range(9, -1, -2), range(1, 9), range(0, 10, 3))
    child = (range(1, 2), range(1, 4), range(6, 0, -3), range(3, 4))
    composed = compose(parent, child)
    for p, c, r in zip(parent, child, composed, strict=True):
        assert list(r) == [p[n] for n in c]


def test_is_whole() -> None:
    assert is_whole(full_ranges((1, 2, 3, 4)), (1, 2, 3, 4))
    assert not is_whole((range(1), range(2), range(3), range(3, -1, -1)), (1, 2, 3, 4))


def test_region_affine_moves_origin_scales_and_flips() -> None:
    affine = np.array([[0, 0, 2.0, 10], [3.0, 0, 0, 20], [0, -1.5, 0, 30], [0, 0, 0, 1]])
    ranges = (range(1), range(2, 9, 3), range(5, 0, -1), range(4, 5))
    result = region_affine(affine, ranges)
    # Column i scaled by its step, column j flipped, origin at voxel (2, 5, 4).
    np.testing.assert_allclose(result[:3, 0], 3 * affine[:3, 0])
    np.testing.assert_allclose(result[:3, 1], -affine[:3, 1])
    np.testing.assert_allclose(result[:3, 2], affine[:3, 2])
    np.testing.assert_allclose(result[:3, 3], affine[:3, :3] @ [2, 5, 4] + affine[:3, 3])


# ------------------------------------------------------------ property tests
@st.composite
def shapes(draw: Any, max_channels: int = 3) -> tuple[int, int, int, int]:
    return (
        draw(st.integers(1, max_channels)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 5)),
    )


def axis_items(size: int) -> st.SearchStrategy[Any]:
    """An index for one axis: an int in range (incl. negative) or any slice."""
    bound = st.none() | st.integers(-size - 2, size + 2)
    step = st.none() | st.integers(-3, 3).filter(bool)
    return st.integers(-size, size - 1) | st.builds(slice, bound, bound, step)


@st.composite
def keys(draw: Any, shape: tuple[int, ...]) -> tuple[Any, tuple[Any, ...]]:
    """A user's key and its NumPy oracle key (4 items, integers as length-1 slices).

    The key uses a prefix of per-axis items, optionally an ellipsis, and a suffix.
    """
    items = [draw(axis_items(n)) for n in shape]
    oracle = [_as_oracle(item) for item in items]
    if draw(st.booleans()):  # with an ellipsis
        before = draw(st.integers(0, 4))
        after = draw(st.integers(0, 4 - before))
        key = (*items[:before], Ellipsis, *items[4 - after :])
        oracle = oracle[:before] + [slice(None)] * (4 - before - after) + oracle[4 - after :]
    else:
        count = draw(st.integers(0, 4))
        key = tuple(items[:count])
        oracle = oracle[:count] + [slice(None)] * (4 - count)
    if len(key) == 1 and draw(st.booleans()):
        key = key[0]  # a bare index, not in a tuple
    return key, tuple(oracle)


def _as_oracle(item: Any) -> Any:
    if isinstance(item, int):
        return slice(item, item + 1 if item != -1 else None)
    return item


def _source_indices(shape: tuple[int, ...], oracle: tuple[Any, ...]) -> list[np.ndarray]:
    """Parent voxel indices along I, J, K that NumPy's result takes."""
    return [np.arange(n)[o] for n, o in zip(shape[1:], oracle[1:], strict=True)]


def check_slicing(image: tio.Image, expected_data: np.ndarray, key: Any, oracle: Any) -> None:
    """``image[key]`` and ``image.dataobj[key]`` equal NumPy's result; affine follows."""
    expected = expected_data[oracle]
    if expected.size == 0:
        with pytest.raises(IndexError, match="selects no voxels"):
            image[key]
        with pytest.raises(IndexError):
            image.dataobj[key]
        return
    child = image[key]
    assert type(child) is type(image)
    assert child.shape == expected.shape
    assert not child.is_loaded or image.is_loaded
    np.testing.assert_array_equal(child.numpy(), expected)
    from_dataobj = image.dataobj[key]
    assert isinstance(from_dataobj, torch.Tensor) and from_dataobj.ndim == 4
    np.testing.assert_array_equal(from_dataobj.numpy(), expected)
    assert_affine_follows(child, image.affine, _source_indices(expected_data.shape, oracle))


def _written(
    directory: Path, array: np.ndarray, affine: np.ndarray, suffix: str, cls: type = nib.Nifti1Image
) -> tio.ScalarImage:
    path = Path(tempfile.mkstemp(suffix=suffix, dir=directory)[1])
    nib.save(cls(array, affine), path)
    return tio.ScalarImage(path)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("indexing")


@pytest.mark.parametrize("storage", [".nii", ".nii.gz", "tensor"])
@SETTINGS
@given(data=st.data(), shape=shapes(max_channels=1), seed=st.integers(0, 2**16))
def test_slicing_3d_equals_numpy(
    scratch: Path, storage: str, data: Any, shape: tuple[int, ...], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape[1:]).astype(np.int16)
    affine = random_affine(rng)
    if storage == "tensor":
        image = tio.ScalarImage(torch.from_numpy(array[None].copy()), affine=affine)
    else:
        image = _written(scratch, array, affine, storage)
    key, oracle = data.draw(keys(shape))
    check_slicing(image, array[None], key, oracle)
    if storage != "tensor":
        assert not image.is_loaded  # the parent stays lazy


@pytest.mark.parametrize("layout", ["4d", "5d", "4d.gz"])
@SETTINGS
@given(data=st.data(), shape=shapes(), seed=st.integers(0, 2**16))
def test_slicing_multichannel_files_equals_numpy(
    scratch: Path, layout: str, data: Any, shape: tuple[int, ...], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    channels, i, j, k = shape
    file_shape = (i, j, k, 1, channels) if layout == "5d" else (i, j, k, channels)
    array = rng.normal(size=file_shape).astype(np.float32)
    image = _written(
        scratch, array, random_affine(rng), ".nii.gz" if layout.endswith("gz") else ".nii"
    )
    expected = nifti_to_cijk(array)
    assert image.shape == expected.shape
    key, oracle = data.draw(keys(shape))
    check_slicing(image, expected, key, oracle)
    assert not image.is_loaded


@SETTINGS
@given(data=st.data(), shape=shapes(), seed=st.integers(0, 2**16))
def test_slices_of_slices_compose(
    scratch: Path, data: Any, shape: tuple[int, ...], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    channels, i, j, k = shape
    array = rng.normal(size=(i, j, k, channels)).astype(np.float32)
    image = _written(scratch, array, random_affine(rng), ".nii")
    expected = nifti_to_cijk(array)
    key1, oracle1 = data.draw(keys(shape))
    first_expected = expected[oracle1]
    if first_expected.size == 0:
        return
    key2, oracle2 = data.draw(keys(first_expected.shape))
    second_expected = first_expected[oracle2]
    if second_expected.size == 0:
        return
    child = image[key1][key2]
    assert not child.is_loaded and not image.is_loaded
    np.testing.assert_array_equal(child.numpy(), second_expected)
    # Composed indices, straight from NumPy: parent indices of the grandchild's voxels.
    indices = [
        np.arange(n)[o1][o2] for n, o1, o2 in zip(shape[1:], oracle1[1:], oracle2[1:], strict=True)
    ]
    assert_affine_follows(child, image.affine, indices)
    # A loaded parent gives the same values through the in-memory path.
    image.load()
    np.testing.assert_array_equal(image[key1][key2].numpy(), second_expected)


def test_every_step_combination_on_a_small_volume(tmp_path: Path) -> None:
    """Exhaustive over steps ±1, ±2 on every axis: a cheap complement to Hypothesis."""
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 4, 3)).astype(np.float32)
    affine = random_affine(rng)
    path = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(array, affine), path)
    image = tio.ScalarImage(path)
    for steps in itertools.product((1, -1, 2, -2), repeat=3):
        key = (slice(None), *(slice(None, None, s) for s in steps))
        check_slicing(image, array[None], key, key)
