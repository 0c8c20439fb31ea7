"""The segment planner: which byte runs of a file hold a box, and where they go.

A NIfTI volume is one array stored contiguously in Fortran order. A box of it
is a set of runs of bytes; :func:`plan` turns a box into a
:class:`SegmentPlan` (a pure function, like nibabel's ``fileslice``): one
segment per combination of indices on the *outer* axes, each segment one
contiguous run that covers the *inner* axes, cut in memory afterwards. Where
the split between inner and outer axes falls is a cost trade-off that each
storage states with one number, ``seek_cost`` (bytes it would rather read
than start another run):

* a memory map: ``inf`` (one run; the map's view touches only the pages read);
* a ``.nii.gz`` through a seek-point index: a restart of the inflater;
* ranged remote requests: the bytes a round trip is worth.

The executors share :meth:`SegmentPlan.gather`: runs are fetched as blocks
(neighbours merged by :func:`fsspec.utils.merge_offset_ranges`), and the
segments are cut out of each block with array views, never one voxel at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Fetch = Callable[[list[tuple[int, int]]], Sequence[np.ndarray]]
"""``fetch([(start, stop), ...]) -> one uint8 array per byte range`` (an executor's I/O)."""


@dataclass(frozen=True)
class FileLayout:
    """An array of ``shape`` (Fortran order) and ``dtype`` stored from byte ``offset``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def strides(self) -> tuple[int, ...]:
        """Bytes between neighbours along each axis."""
        strides, step = [], self.dtype.itemsize
        for size in self.shape:
            strides.append(step)
            step *= size
        return tuple(strides)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Segment:
    """One run: ``length`` bytes from file byte ``offset``, bound for ``region[dest]``."""

    offset: int
    length: int
    dest: tuple[slice | int, ...]


@dataclass(frozen=True)
class SegmentPlan:
    """How to read ``box`` (slices in the file's axis order) of ``layout``.

    Axes below ``split`` are inner: one run covers them, as an array of
    ``run_shape`` (Fortran order) cut with ``source``. Axes from ``split`` on
    are outer: one segment per index, at byte ``offsets`` (ascending, in
    Fortran order of the outer indices).
    """

    layout: FileLayout
    box: tuple[slice, ...]
    split: int
    offsets: np.ndarray
    length: int
    run_shape: tuple[int, ...]
    source: tuple[slice, ...]

    @property
    def region_shape(self) -> tuple[int, ...]:
        return tuple(len(range(s.start, s.stop, s.step)) for s in self.box)

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return self.region_shape[self.split :]

    def segments(self) -> list[Segment]:
        """The plan as an explicit list (for reading and testing; executors use arrays)."""
        inner = (slice(None),) * self.split
        outer = [
            tuple(int(i) for i in np.unravel_index(n, self.outer_shape, order="F"))
            for n in range(len(self.offsets))
        ]
        return [
            Segment(int(offset), self.length, inner + index)
            for offset, index in zip(self.offsets.tolist(), outer, strict=True)
        ]

    def cut(self, run: np.ndarray) -> np.ndarray:
        """The wanted values of one run (uint8 bytes) as an inner-axes view."""
        values = run.view(self.layout.dtype).reshape(self.run_shape, order="F")
        return values[self.source]

    def gather(self, fetch: Fetch, *, max_gap: int = 0, max_block: int | None = None) -> np.ndarray:
        """The region, ``region_shape`` in the file's dtype and axis order (Fortran order).

        Segments closer than ``max_gap`` bytes are fetched as one block (at most
        ``max_block`` bytes, unless one segment is longer).
        """
        from fsspec.utils import merge_offset_ranges

        region = np.empty(self.region_shape, dtype=self.layout.dtype, order="F")
        if not len(self.offsets):
            return region
        inner = self.region_shape[: self.split]
        by_segment = region.reshape((*inner, len(self.offsets)), order="F")  # a view
        starts = self.offsets.tolist()
        stops = (self.offsets + self.length).tolist()
        _, block_starts, block_stops = merge_offset_ranges(
            [""] * len(starts), starts, stops, max_gap=max_gap, max_block=max_block, sort=False
        )
        blocks = fetch(list(zip(block_starts, block_stops, strict=True)))
        owner = np.searchsorted(np.asarray(block_starts), self.offsets, side="right") - 1
        bounds = np.flatnonzero(np.diff(owner)) + 1
        first = np.concatenate(([0], bounds))
        last = np.concatenate((bounds, [len(self.offsets)]))
        for a, b in zip(first.tolist(), last.tolist(), strict=True):
            block = np.asarray(blocks[owner[a]], dtype=np.uint8).reshape(-1)
            local = self.offsets[a:b] - block_starts[owner[a]]
            if b - a == 1:
                rows = block[local[0] : local[0] + self.length][None]
            else:  # every segment of the block, one fancy index over a sliding view
                windows = np.lib.stride_tricks.sliding_window_view(block, self.length)
                rows = windows[local]
            values = rows.view(self.layout.dtype).reshape(
                (b - a, *self.run_shape[::-1])
            )  # C order of the reversed run shape is the run's Fortran order
            cut = values[(slice(None), *self.source[::-1])]
            by_segment[..., a:b] = np.moveaxis(cut, 0, -1).transpose(
                (*range(self.split - 1, -1, -1), self.split)
            )
        return region


def plan(
    layout: FileLayout,
    box: Sequence[slice],
    *,
    seek_cost: float,
    max_run: int | None = None,
) -> SegmentPlan:
    """Plan the read of ``box`` (slices in the file's axis order, positive steps).

    Chooses the split that minimises ``segments × (seek_cost + run bytes)``
    (ties: fewer segments); ``max_run`` bounds a run's bytes where possible.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends.segments import FileLayout, plan
        >>> layout = FileLayout((10, 4, 3), np.dtype("<i2"), offset=352)
        >>> p = plan(layout, (slice(2, 6, 1), slice(1, 3, 1), slice(0, 3, 1)), seek_cost=0)
        >>> p.split, p.length, [s.offset for s in p.segments()][:3]
        (1, 8, [376, 396, 456])
    """
    box = tuple(slice(s.start, s.stop, s.step or 1) for s in box)
    shape = layout.shape
    strides = layout.strides
    itemsize = layout.dtype.itemsize
    picks = [range(s.start, s.stop, s.step) for s in box]
    counts = [len(r) for r in picks]
    spans = [r[-1] - r[0] + 1 if len(r) else 0 for r in picks]
    ndim = len(shape)
    best, best_cost = 1, math.inf
    for split in range(1, ndim + 1):
        run = math.prod(shape[: split - 1]) * spans[split - 1] * itemsize
        if max_run is not None and run > max_run and split > 1:
            break
        segments = math.prod(counts[split:])
        cost = segments * (seek_cost + run) if math.isfinite(seek_cost) else segments
        if cost <= best_cost:
            best, best_cost = split, cost
    split = best
    inner = split - 1
    run_shape = (*shape[:inner], spans[inner])
    source = (*box[:inner], slice(0, spans[inner], box[inner].step))
    start = layout.offset + (picks[inner][0] if counts[inner] else 0) * strides[inner]
    offsets = np.full(1, start, dtype=np.int64)
    for axis in range(split, ndim):  # Fortran order: earlier outer axes vary fastest
        steps = np.arange(box[axis].start, box[axis].stop, box[axis].step, dtype=np.int64)
        offsets = (offsets[:, None] + steps[None, :] * strides[axis]).reshape(-1, order="F")
    if any(c == 0 for c in counts):
        offsets = offsets[:0]
    length = math.prod(run_shape) * itemsize
    return SegmentPlan(layout, box, split, offsets, length, run_shape, source)
