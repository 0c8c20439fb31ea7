"""``AffineMatrix``: TorchIO 2.0's names, and still a NumPy array.

The cases follow TorchIO 2.0's own ``tests/test_affine.py`` (identity, copies,
spacing/origin/direction/orientation, inverse, compose, ``@``, apply, NumPy
interop, repr, copies), run against voxelflow; where voxelflow differs (``==`` is
NumPy's, elementwise) the test says so.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow import AffineMatrix


def _oblique() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = [[0, -2, 0], [3, 0, 0], [0, 0, 4]]
    matrix[:3, 3] = [10, 20, 30]
    return matrix


def test_construction_copies_and_is_float64() -> None:
    np.testing.assert_array_equal(AffineMatrix().numpy(), np.eye(4))
    source = np.diag([2.0, 3.0, 4.0, 1.0]).astype(np.float32)
    affine = AffineMatrix(source)
    source[0, 0] = 999
    assert affine.dtype == np.float64 and affine[0, 0] == 2.0
    np.testing.assert_array_equal(AffineMatrix(np.eye(4).tolist()), np.eye(4))
    np.testing.assert_array_equal(AffineMatrix(torch.eye(4) * 2)[:3, :3], 2 * np.eye(3))
    for bad in (np.eye(3), np.ones((4, 4, 4))):
        with pytest.raises(ValueError, match="4×4"):
            AffineMatrix(bad)


def test_named_properties() -> None:
    affine = AffineMatrix.from_spacing((0.5, 0.8, 1.2), origin=(100.0, 200.0, 300.0))
    np.testing.assert_allclose(affine.spacing, (0.5, 0.8, 1.2))
    assert affine.origin == (100.0, 200.0, 300.0)
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    rotated = AffineMatrix.from_spacing((2.0, 2.0, 2.0), direction=rotation)
    np.testing.assert_allclose(rotated.direction, rotation, atol=1e-12)
    np.testing.assert_allclose(rotated.spacing, (2.0, 2.0, 2.0))
    assert AffineMatrix().orientation == ("R", "A", "S")
    assert AffineMatrix(np.diag([-1.0, 1.0, 1.0, 1.0])).orientation == ("L", "A", "S")
    assert rotated.orientation == ("A", "L", "S")


def test_inverse_compose_matmul_apply() -> None:
    affine = AffineMatrix(_oblique())
    np.testing.assert_allclose(affine.inverse().inverse(), affine, atol=1e-12)
    np.testing.assert_allclose(
        AffineMatrix(np.diag([2.0, 3, 4, 1])).inverse().spacing, (0.5, 1 / 3, 0.25)
    )
    shift_i = AffineMatrix.from_spacing((1, 1, 1), origin=(10, 0, 0))
    shift_j = AffineMatrix.from_spacing((1, 1, 1), origin=(0, 20, 0))
    assert shift_i.compose(shift_j).origin == (10.0, 20.0, 0.0)
    product = shift_i @ shift_j
    assert isinstance(product, AffineMatrix)
    np.testing.assert_allclose(affine @ affine.inverse(), np.eye(4), atol=1e-12)
    with pytest.raises(TypeError):
        AffineMatrix() @ "not an affine"  # type: ignore[operator]
    points = np.array([[0.0, 0, 0], [1, 2, 3]])
    world = affine.apply(points)
    assert isinstance(world, torch.Tensor) and world.dtype == torch.float64
    np.testing.assert_allclose(world.numpy(), points @ _oblique()[:3, :3].T + [10, 20, 30])


def test_numpy_code_keeps_working() -> None:
    affine = AffineMatrix(_oblique())
    vector = affine @ [1, 1, 1, 1]
    assert type(vector) is np.ndarray and vector.tolist() == [8.0, 23.0, 34.0, 1.0]
    assert type(affine[:3, 3]) is np.ndarray  # parts are plain arrays...
    assert type(affine.T) is AffineMatrix  # ...the whole matrix stays one
    assert type(np.asarray(affine)) is np.ndarray
    assert np.array(affine, dtype=np.float32).dtype == np.float32
    assert bool(np.allclose(affine, _oblique()))
    assert (affine == _oblique()).all()  # NumPy's elementwise ==, not TorchIO's bool
    assert type(np.linalg.norm(affine[:3, :3], axis=0)) is np.ndarray
    assert type(affine.sum()) is np.float64
    copied = affine.copy()
    copied[:3, 3] += 1  # in place, through a plain view
    assert copied.origin == (11.0, 21.0, 31.0) and affine.origin == (10.0, 20.0, 30.0)
    assert torch.equal(torch.from_numpy(affine.numpy()), affine.tensor())


def test_copies_pickle_and_repr() -> None:
    affine = AffineMatrix(np.diag([0.5, 0.8, 1.2, 1.0]))
    for twin in (
        copy.copy(affine),
        copy.deepcopy(affine),
        affine.clone(),
        pickle.loads(pickle.dumps(affine)),
    ):
        assert isinstance(twin, AffineMatrix)
        np.testing.assert_array_equal(twin, affine)
        twin.numpy()[0, 0] = 999
        assert affine[0, 0] == 0.5
    assert repr(affine) == (
        "AffineMatrix(spacing=(0.50, 0.80, 1.20), origin=(0.00, 0.00, 0.00), orientation=RAS+)"
    )


def test_image_affine_is_an_affine_matrix(write_nifti) -> None:
    """TorchIO code: ``image.affine.numpy()``, ``image.affine.orientation``."""
    matrix = np.diag([-2.0, 3.0, 4.0, 1.0])
    path = write_nifti(np.zeros((4, 5, 6), np.float32), affine=matrix)
    for image in (tio.ScalarImage(path), tio.ScalarImage(torch.zeros(1, 4, 5, 6), affine=matrix)):
        assert isinstance(image.affine, AffineMatrix)
        np.testing.assert_array_equal(image.affine.numpy(), matrix)
        assert image.affine.orientation == image.orientation == ("L", "A", "S")
        assert image.affine.spacing == image.spacing == (2.0, 3.0, 4.0)
        assert image[:, 1:].affine.origin == (-2.0, 0.0, 0.0)
