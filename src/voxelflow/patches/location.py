"""``PatchLocation``: where a patch lies in its volume."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from voxelflow._errors import VoxelflowValueError


@dataclass(frozen=True)
class PatchLocation:
    """A box of voxels: first voxel ``index`` and ``size`` along ``I, J, K``.

    Example:
        >>> from voxelflow import PatchLocation
        >>> location = PatchLocation(index=(10, 0, 5), size=(4, 4, 4))
        >>> location.index_fin
        (14, 4, 9)
        >>> location.to_slices()
        (slice(10, 14, None), slice(0, 4, None), slice(5, 9, None))
        >>> location.scaled(0.5)  # the same box on a grid of half the resolution
        PatchLocation(index=(5, 0, 3), size=(2, 2, 2))
    """

    index: tuple[int, int, int]
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        index = tuple(int(i) for i in self.index)
        size = tuple(int(s) for s in self.size)
        if len(index) != 3 or len(size) != 3:
            raise VoxelflowValueError(
                f"PatchLocation needs 3 indices and 3 sizes, got index={self.index}, size={self.size}"
            )
        if any(s <= 0 for s in size):
            raise VoxelflowValueError(f"PatchLocation size must be positive, got {size}")
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "size", size)

    @property
    def index_ini(self) -> tuple[int, int, int]:
        """First voxel (inclusive)."""
        return self.index

    @property
    def index_fin(self) -> tuple[int, int, int]:
        """One past the last voxel (exclusive)."""
        return tuple(i + s for i, s in zip(self.index, self.size, strict=True))  # type: ignore[return-value]

    def to_slices(self) -> tuple[slice, slice, slice]:
        """Spatial slices, usable as ``image[(slice(None), *location.to_slices())]``."""
        return tuple(slice(i, f) for i, f in zip(self.index_ini, self.index_fin, strict=True))  # type: ignore[return-value]

    def scaled(self, factor: float | Sequence[float]) -> PatchLocation:
        """The box on a grid ``factor`` times as fine (one factor or one per axis).

        As in TorchIO, the first voxel and the size are each scaled and rounded
        to the nearest voxel (halves up, at least one voxel), so patches of one
        size keep one size: e.g. where a model's output, at half the input's
        resolution, goes in the output volume.
        """
        factors = (factor,) * 3 if isinstance(factor, int | float) else tuple(factor)
        if len(factors) != 3 or not all(float(f) > 0 for f in factors):
            raise VoxelflowValueError(
                f"PatchLocation.scaled: factor must be a positive number or three, got {factor!r}"
            )
        index = [math.floor(i * float(f) + 0.5) for i, f in zip(self.index, factors, strict=True)]
        size = [
            max(1, math.floor(s * float(f) + 0.5)) for s, f in zip(self.size, factors, strict=True)
        ]
        return PatchLocation(tuple(index), tuple(size))  # type: ignore[arg-type]
