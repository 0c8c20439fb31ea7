"""How NIfTI-Zarr lays NIfTI dimensions out on OME axes (shared by reader and writer).

NIfTI-Zarr arrays are stored in OME order ``(t, c, z, y, x)``: the reverse of
NIfTI's ``(i, j, k, t, c)``, so ``x`` is ``i`` and ``z`` is ``k``. Axes of size
one may be left out, except the three spatial ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxelflow._errors import VoxelflowValueError


@dataclass(frozen=True)
class Layout:
    """How NIfTI dimensions map onto the OME axes of the zarr arrays.

    ``axes`` are the zarr axis names in storage order (a subsequence of
    ``t, c, z, y, x``); ``file_shape`` the NIfTI dims ``(I, J, K[, T[, C]])``.
    voxelflow channels are the NIfTI ``T × C`` values flattened in NIfTI
    (Fortran) order: channel ``t + T * c``.
    """

    axes: tuple[str, ...]
    file_shape: tuple[int, ...]

    @property
    def t(self) -> int:
        return self.file_shape[3] if len(self.file_shape) > 3 else 1

    @property
    def c(self) -> int:
        return self.file_shape[4] if len(self.file_shape) > 4 else 1

    @property
    def channels(self) -> int:
        return self.t * self.c

    def zarr_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Zarr shape for spatial size ``(I, J, K)``."""
        sizes = {"t": self.t, "c": self.c, "x": spatial[0], "y": spatial[1], "z": spatial[2]}
        return tuple(sizes[a] for a in self.axes)

    def to_zarr(self, data: np.ndarray) -> np.ndarray:
        """``(C, I, J, K)`` (any layout) → array in zarr axis order (a view when possible)."""
        channels, i, j, k = data.shape
        five = data.reshape(self.c, self.t, i, j, k).transpose(1, 0, 4, 3, 2)  # t c z y x
        drop = tuple(n for n, a in enumerate("tczyx") if a not in self.axes)
        return five.reshape([s for n, s in enumerate(five.shape) if n not in drop])

    def from_zarr(self, data: np.ndarray) -> np.ndarray:
        """Array in zarr axis order → ``(C, I, J, K)`` (a view when possible)."""
        shape = list(data.shape)
        full = []
        for name in "tczyx":
            full.append(shape.pop(0) if name in self.axes else 1)
        five = data.reshape(full)  # t c z y x
        t, c, z, y, x = five.shape
        return five.transpose(1, 0, 4, 3, 2).reshape(c * t, x, y, z)


def layout_for(axes: Sequence[str], file_shape: Sequence[int], where: str) -> Layout:
    axes = tuple(str(a).lower() for a in axes)
    if not set(axes) <= set("tczyx") or not {"x", "y", "z"} <= set(axes):
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not NIfTI-Zarr axes (a subsequence of "
            "t, c, z, y, x with all of z, y, x); the store is not NIfTI-Zarr"
        )
    if list(axes) != [a for a in "tczyx" if a in axes]:
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not in the order t, c, z, y, x; "
            "re-convert the volume"
        )
    shape = tuple(int(n) for n in file_shape)
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    if len(shape) > 5:
        raise VoxelflowValueError(f"{where}: NIfTI header has {len(shape)} dims; at most 5")
    layout = Layout(axes, shape)
    for name, size in (("t", layout.t), ("c", layout.c)):
        if name not in axes and size != 1:
            raise VoxelflowValueError(
                f"{where}: the NIfTI header has {name}={size} but the arrays have no "
                f"{name!r} axis; the header disagrees with the arrays; re-convert the volume"
            )
    return layout
