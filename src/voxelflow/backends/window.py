"""A lazy region of another backend: what slicing an unloaded image returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from voxelflow._indexing import Box, Ranges, compose, region_affine, to_box
from voxelflow.backends.base import Backend, BackendProtocol


class WindowBackend(Backend):
    """The region ``ranges`` of ``parent``; reads go straight to the parent's region reads.

    Windows of windows collapse into one window of the original backend, so a
    chain of slices costs one read.

    Example:
        >>> import torch
        >>> from voxelflow.backends import TensorBackend, WindowBackend
        >>> parent = TensorBackend(torch.arange(1000.0).reshape(1, 10, 10, 10))
        >>> window = WindowBackend(parent, (range(1), range(2, 8, 2), range(10), range(9, -1, -1)))
        >>> window.shape, window[0, 0, 0, 0].item()
        ((1, 3, 10, 10), 209.0)
    """

    parent: BackendProtocol
    ranges: Ranges

    def __init__(self, parent: BackendProtocol, ranges: Ranges) -> None:
        if isinstance(parent, WindowBackend):
            ranges = compose(parent.ranges, ranges)
            parent = parent.parent
        self.parent = parent
        self.ranges = ranges
        self.shape = tuple(len(r) for r in ranges)  # type: ignore[assignment]

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
    def region_reads(self) -> bool:  # type: ignore[override]
        return self.parent.region_reads

    def read(self, box: Box | None = None) -> torch.Tensor:
        ranges = self.ranges
        if box is not None:
            ranges = compose(ranges, tuple(range(s.start, s.stop, s.step) for s in box))  # type: ignore[arg-type]
        parent_box, flips = to_box(ranges)
        whole = all(
            s.start == 0 and s.stop == n and s.step == 1
            for s, n in zip(parent_box, self.parent.shape, strict=True)
        )
        data = self.parent.read(None if whole else parent_box)
        if flips:
            return data.flip(flips)
        if whole and self.parent.in_memory:
            return data.clone()  # the caller owns what it gets
        return data

    def release(self) -> None:
        """Drop caches of the backend this window reads from (``Image.unload()`` calls it)."""
        release = getattr(self.parent, "release", None)
        if release is not None:
            release()

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.parent, "describe", dict)
        return {**describe(), "window": [(r.start, r.stop, r.step) for r in self.ranges]}
