"""Shared fixtures: small NIfTI files made on the fly, and a backend that proves laziness.

Other issues may add small fixtures here; keep each one short and documented.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow._indexing import Box
from voxelflow.backends import NiftiBackend, register_backend, unregister_backend
from voxelflow.backends.base import Backend


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """A non-trivial voxel-to-world matrix: rotation, anisotropic spacing, offset."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(0.5, 3.0, size=3))
    affine[:3, 3] = rng.uniform(-100, 100, size=3)
    return affine


def nifti_to_cijk(array: np.ndarray) -> np.ndarray:
    """A NIfTI array ``(I, J, K[, T[, C]])`` rearranged to voxelflow's ``(C, I, J, K)``.

    Written independently of the library: 3-D gets a channel axis; 4-D puts T first;
    5-D flattens ``(T, C)`` in Fortran order (t fastest), as the file stores it.
    """
    if array.ndim == 3:
        return array[None]
    if array.ndim == 4:
        return np.stack([array[..., t] for t in range(array.shape[3])])
    if array.ndim == 5:
        t_size, c_size = array.shape[3:]
        return np.stack([array[..., t, c] for c in range(c_size) for t in range(t_size)])
    raise ValueError(array.shape)


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """World coordinates of voxel indices ``ijk`` (N, 3)."""
    return ijk @ affine[:3, :3].T + affine[:3, 3]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    """``write_nifti(array, name="x.nii", affine=None, cls=nib.Nifti1Image) -> path``."""

    def write(
        array: np.ndarray,
        name: str = "image.nii",
        affine: np.ndarray | None = None,
        cls: type = nib.Nifti1Image,
        slope_inter: tuple[float, float] | None = None,
    ) -> Path:
        image = cls(array, np.eye(4) if affine is None else affine)
        if slope_inter is not None:
            image.header.set_slope_inter(*slope_inter)
        path = tmp_path / name
        nib.save(image, path)
        return path

    return write


# ---------------------------------------------------------------- laziness probe
class WholeReadError(AssertionError):
    """Raised by :class:`StrictBackend` when asked for the whole volume."""


class StrictBackend(Backend):
    """A real :class:`NiftiBackend` that refuses whole reads and records region reads.

    Registered (see the ``strict_backend`` fixture) for files named ``*.strict.nii``;
    a test that runs without :class:`WholeReadError` proves its code path is lazy.
    """

    log: list[Box] = []  # shared by every instance made while the fixture is active

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.inner = NiftiBackend(path)
        self.path = self.inner.path
        self.shape = self.inner.shape
        self.dtype = self.inner.dtype
        self.affine = self.inner.affine

    def read(self, box: Box | None = None) -> torch.Tensor:
        if box is None:
            raise WholeReadError(f"{self.path}: whole read requested")
        StrictBackend.log.append(box)
        return self.inner.read(box)


@pytest.fixture
def strict_backend() -> Iterator[type[StrictBackend]]:
    """Registers ``StrictBackend`` for ``*.strict.nii``; yields the class (its ``log``)."""
    StrictBackend.log = []
    register_backend(
        "strict-test", lambda source: source.endswith(".strict.nii"), StrictBackend, priority=1000
    )
    try:
        yield StrictBackend
    finally:
        unregister_backend("strict-test")
        StrictBackend.log = []


@pytest.fixture
def strict_file(
    tmp_path: Path, rng: np.random.Generator, strict_backend: type[StrictBackend]
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 2-channel ``.strict.nii`` file: ``(path, data (C, I, J, K), affine)``."""
    array = rng.normal(size=(9, 10, 11, 2)).astype(np.float32)
    affine = random_affine(rng)
    path = tmp_path / "volume.strict.nii"
    nib.save(nib.Nifti1Image(array, affine), path)
    return path, nifti_to_cijk(array), affine


def assert_affine_follows(child: Any, parent_affine: np.ndarray, index_arrays: Any) -> None:
    """Each voxel of ``child`` lies in world space where its source voxel lay in the parent.

    ``index_arrays`` are the parent's voxel indices along I, J, K that the child's
    voxels came from (1-D arrays, computed by NumPy).
    """
    index_arrays = [np.asarray(a) for a in index_arrays]
    ii, jj, kk = np.meshgrid(*[np.arange(len(a)) for a in index_arrays], indexing="ij")
    child_ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
    parent_ijk = np.stack(
        [index_arrays[0][ii.ravel()], index_arrays[1][jj.ravel()], index_arrays[2][kk.ravel()]],
        axis=1,
    ).astype(float)
    np.testing.assert_allclose(
        world(np.asarray(child.affine), child_ijk), world(parent_affine, parent_ijk), atol=1e-9
    )


# ---------------------------------------------------------------- a user's environment
ROOT = Path(__file__).resolve().parents[1]


@cache
def docs_python() -> str:
    """The python of an environment with voxelflow alone (no pytest, no test packages):
    ``$VOXELFLOW_DOCS_PYTHON`` (set by scripts/test.sh), or ``.venv-docs``, made or reused
    by ``scripts/_venv.sh`` as test.sh does."""
    given = os.environ.get("VOXELFLOW_DOCS_PYTHON")
    if given:
        return given
    venv = ROOT / ".venv-docs"
    command = f'source scripts/_venv.sh && setup_venv "{venv}" ""'
    subprocess.run(["bash", "-c", command], cwd=ROOT, check=True)
    return str(venv / "bin" / "python")


def user_env() -> dict[str, str]:
    """This environment minus Python's variables, importing voxelflow from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PYTHONIOENCODING"] = "utf-8"  # whatever the locale: the docs print '×'
    return env
