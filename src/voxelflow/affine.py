"""``AffineMatrix``: a 4×4 voxel-to-world matrix that is also a NumPy array.

TorchIO 2.0 gives ``image.affine`` as an ``AffineMatrix`` with named
properties (``spacing``, ``origin``, ``orientation``...) and ``numpy()``.
voxelflow's is a ``float64`` ``np.ndarray`` subclass with the same names, so
TorchIO code (``image.affine.numpy()``, ``image.affine.orientation``) and NumPy
code (``affine @ [i, j, k, 1]``, ``affine[:3, 3]``, ``np.allclose``) both work.
Anything that is not the whole 4×4 matrix (a row, a block, a product with a
vector) comes back as a plain ``np.ndarray``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError


class AffineMatrix(np.ndarray):
    """A 4×4 ``float64`` voxel-to-world (RAS+, mm) matrix with named properties.

    Args:
        matrix: anything 4×4 (array, nested lists, ``torch.Tensor``, another
            ``AffineMatrix``); ``None`` for the identity. The values are copied.

    Example:
        >>> import numpy as np, voxelflow as tio
        >>> affine = tio.AffineMatrix(np.diag([2.0, 3.0, 4.0, 1.0]))
        >>> affine.spacing, affine.orientation
        ((2.0, 3.0, 4.0), ('R', 'A', 'S'))
        >>> affine.inverse().spacing
        (0.5, 0.3333333333333333, 0.25)
        >>> (affine @ [1, 1, 1, 1]).tolist()  # a plain array: NumPy code keeps working
        [2.0, 3.0, 4.0, 1.0]
    """

    def __new__(cls, matrix: Any = None) -> AffineMatrix:
        return as_affine(np.eye(4) if matrix is None else matrix, copy=True)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_spacing(
        cls,
        spacing: Sequence[float],
        *,
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: Any = None,
    ) -> AffineMatrix:
        """The affine of voxels of ``spacing`` mm, first voxel at ``origin``, axes ``direction``."""
        matrix = np.eye(4)
        if direction is not None:
            matrix[:3, :3] = _as_numpy(direction).reshape(3, 3)
        matrix[:3, :3] *= np.asarray(spacing, dtype=np.float64)
        matrix[:3, 3] = np.asarray(origin, dtype=np.float64)
        return cls(matrix)

    # ------------------------------------------------------------ properties
    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along I, J, K in mm (norms of the first three columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.numpy()[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(x) for x in self.numpy()[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """The 3×3 direction cosines (the columns divided by the spacing)."""
        block = self.numpy()[:3, :3]
        return block / np.linalg.norm(block, axis=0)  # type: ignore[no-any-return]

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes, e.g. ``('R', 'A', 'S')``."""
        return tuple(nib.aff2axcodes(self.numpy()))  # type: ignore[return-value]

    # ------------------------------------------------------------ methods
    def numpy(self) -> np.ndarray:
        """The matrix as a plain ``np.ndarray`` (a view: no copy)."""
        return self.view(np.ndarray)

    def tensor(self) -> torch.Tensor:
        """The matrix as a ``float64`` ``torch.Tensor`` (a copy)."""
        return torch.from_numpy(self.numpy().copy())

    def clone(self) -> AffineMatrix:
        """A copy."""
        return AffineMatrix(self)

    def inverse(self) -> AffineMatrix:
        """The world-to-voxel matrix."""
        return as_affine(np.linalg.inv(self.numpy()))

    def compose(self, other: Any) -> AffineMatrix:
        """``self @ other`` as an ``AffineMatrix``."""
        return as_affine(self.numpy() @ _as_numpy(other))

    def apply(self, points: Any) -> torch.Tensor:
        """World coordinates of ``(N, 3)`` voxel coordinates, as a ``float64`` tensor."""
        array = _as_numpy(points).reshape(-1, 3)
        matrix = self.numpy()
        return torch.from_numpy(array @ matrix[:3, :3].T + matrix[:3, 3])

    def to(self, *args: Any, **kwargs: Any) -> AffineMatrix:
        """Accepted for TorchIO's ``Image.to()``: the matrix stays a ``float64`` CPU array."""
        return self

    # ------------------------------------------------------------ NumPy glue
    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, AffineMatrix):
            return self.compose(other)
        if isinstance(other, str):
            return NotImplemented
        return self.numpy() @ other

    def __rmatmul__(self, other: Any) -> Any:
        if isinstance(other, str):
            return NotImplemented
        return other @ self.numpy()

    def __getitem__(self, key: Any) -> Any:
        return self.numpy()[key]

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = tuple(x.numpy() if isinstance(x, AffineMatrix) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(
                x.numpy() if isinstance(x, AffineMatrix) else x for x in kwargs["out"]
            )
        return getattr(ufunc, method)(*plain, **kwargs)

    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        plain = np.asarray(array)
        if return_scalar and plain.ndim == 0:
            return plain[()]
        if plain.shape == (4, 4) and plain.dtype == np.float64:
            return plain.view(AffineMatrix)
        return plain

    def __reduce__(self) -> tuple[Any, ...]:
        return (AffineMatrix, (self.numpy().copy(),))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.2f}" for s in self.spacing)
        origin = ", ".join(f"{v:.2f}" for v in self.origin)
        return (
            f"AffineMatrix(spacing=({spacing}), origin=({origin}), "
            f"orientation={''.join(self.orientation)}+)"
        )

    def __str__(self) -> str:
        return str(self.numpy())


def as_affine(matrix: Any, *, copy: bool = False) -> AffineMatrix:
    """``matrix`` as an :class:`AffineMatrix` (a view of a ``float64`` array when possible).

    Example:
        >>> import numpy as np
        >>> from voxelflow.affine import as_affine
        >>> as_affine(np.eye(4)).origin
        (0.0, 0.0, 0.0)
    """
    array = _as_numpy(matrix)
    if array.shape != (4, 4):
        raise VoxelflowValueError(
            f"an affine must be a 4×4 matrix, got shape {array.shape}; pass the full "
            "homogeneous matrix (last row 0, 0, 0, 1)"
        )
    if copy or array.dtype != np.float64 or not array.flags.c_contiguous:
        array = np.array(array, dtype=np.float64, order="C", copy=True)
    return array.view(AffineMatrix)


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, AffineMatrix):
        return value.numpy()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float64, copy=False)
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise VoxelflowValueError(
            f"an affine must be a 4×4 matrix of numbers, got {type(value).__name__}: {error}"
        ) from None
