"""A lazy region of another backend: what slicing an unloaded image returns.

:class:`RegionBackend` owns the index arithmetic between a region and its
parent (composition of ranges, flips, the region's affine); reads go straight
to the parent's ``read_into``. ``WindowBackend`` is its former name.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from voxelflow._indexing import Box, Ranges, compose, region_affine, to_box
from voxelflow.backends.base import Backend, BackendProtocol, RegionCost, box_ranges, whole_box


class RegionBackend(Backend):
    """The region ``ranges`` of ``parent``; reads go straight to the parent's region reads.

    Regions of regions collapse into one region of the original backend, so a
    chain of slices costs one read. The region reports its parent's
    ``region_cost``; its ``cache_key`` is the parent's plus the window.

    Example:
        >>> import torch
        >>> from voxelflow.backends import RegionBackend, TensorBackend
        >>> parent = TensorBackend(torch.arange(1000.0).reshape(1, 10, 10, 10))
        >>> region = RegionBackend(parent, (range(1), range(2, 8, 2), range(10), range(9, -1, -1)))
        >>> region.shape, region[0, 0, 0, 0].item()
        ((1, 3, 10, 10), 209.0)
    """

    parent: BackendProtocol
    ranges: Ranges

    def __init__(self, parent: BackendProtocol, ranges: Ranges) -> None:
        if isinstance(parent, RegionBackend):
            ranges = compose(parent.ranges, ranges)
            parent = parent.parent
        self.parent = parent
        self.ranges = ranges
        c, i, j, k = (len(r) for r in ranges)
        self.shape = (c, i, j, k)

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.parent.dtype

    @property
    def affine(self) -> np.ndarray:  # type: ignore[override]
        return region_affine(self.parent.affine, self.ranges)

    @property
    def path(self) -> str | None:  # type: ignore[override]
        return self.parent.path

    @property
    def region_cost(self) -> RegionCost:
        return self.parent.region_cost

    @property
    def region_reads(self) -> bool:
        return self.parent.region_reads

    @property
    def window(self) -> tuple[tuple[int, int, int], ...]:
        """The region in the parent's voxels: ``(start, stop, step)`` per axis ``(C, I, J, K)``."""
        return tuple((r.start, r.stop, r.step) for r in self.ranges)

    @property
    def cache_key(self) -> Hashable | None:
        key = self.parent.cache_key
        return None if key is None else (key, self.window)

    def _parent_box(self, box: Box | None) -> tuple[Box | None, tuple[int, ...]]:
        ranges = self.ranges
        if box is not None:
            ranges = compose(ranges, box_ranges(box))
        parent_box, flips = to_box(ranges)
        whole = all(
            s.start == 0 and s.stop == n and s.step == 1
            for s, n in zip(parent_box, self.parent.shape, strict=True)
        )
        return (None if whole else parent_box), flips

    def read(self, box: Box | None = None) -> torch.Tensor:
        parent_box, flips = self._parent_box(self.normalise_box(box))
        data = self.parent.read(parent_box)
        if flips:
            return data.flip(flips)
        if parent_box is None and self.parent.in_memory:
            return data.clone()  # the caller owns what it gets
        return data

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        parent_box, flips = self._parent_box(box)
        if flips:  # torch has no negative strides: read, then copy flipped
            out.copy_(self.parent.read(parent_box).flip(flips))
        else:
            self.parent.read_into(
                whole_box(self.parent.shape) if parent_box is None else parent_box, out
            )

    def release(self) -> None:
        """Drop caches of the backend this region reads from (``Image.unload()`` calls it)."""
        self.parent.release()

    def describe(self) -> dict[str, Any]:
        return {**self.parent.describe(), "window": [list(w) for w in self.window]}


WindowBackend = RegionBackend
"""The former name of :class:`RegionBackend` (kept for code written against it)."""
