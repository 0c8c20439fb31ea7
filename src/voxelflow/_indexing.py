"""Index normalisation, done once for every backend.

A user's index over ``(C, I, J, K)`` (integers, slices with any step, one
``...``) becomes four Python ``range`` objects, one per axis, in the parent's
index space. From those come:

* the *box* handed to a backend: four ``slice(start, stop, step)`` with
  ``0 <= start < stop <= size`` and ``step >= 1`` (a plain box, nothing to
  interpret), plus the axes to flip afterwards when the user asked for a
  negative step;
* the affine of the region, so the first voxel of the region lands where it
  was in the parent and a step scales (or, negative, flips) the voxel axes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from voxelflow._errors import VoxelflowIndexError, VoxelflowTypeError

Box = tuple[slice, slice, slice, slice]
Ranges = tuple[range, range, range, range]

_AXES = ("channel", "i", "j", "k")
_SUPPORTED = "integers, slices (any step) and one '...'"


def full_ranges(shape: Sequence[int]) -> Ranges:
    """The ranges that select a whole array of ``shape``."""
    return tuple(range(n) for n in shape)  # type: ignore[return-value]


def _as_int(item: Any) -> int | None:
    if isinstance(item, bool | np.bool_):
        return None
    try:
        return operator.index(item)
    except TypeError:
        return None


def normalize_index(key: Any, shape: Sequence[int], *, what: str = "image") -> Ranges:
    """Turn ``key`` into one ``range`` per axis of ``shape`` (4 axes).

    An integer keeps its axis with size 1; missing trailing indices mean "all";
    an out-of-range integer raises ``IndexError``; anything that is not an
    integer, a slice or ``...`` raises ``TypeError``.
    """
    if len(shape) != 4:
        raise VoxelflowIndexError(f"{what}: expected a 4-D shape (C, I, J, K), got {tuple(shape)}")
    items = list(key) if isinstance(key, tuple) else [key]
    ellipses = [n for n, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise VoxelflowIndexError(f"{what}: an index can only have a single ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = 4 - (len(items) - 1)
        if fill < 0:
            raise VoxelflowIndexError(
                f"{what}: too many indices ({len(items) - 1}) for the 4 axes (C, I, J, K)"
            )
        items = items[:at] + [slice(None)] * fill + items[at + 1 :]
    if len(items) > 4:
        raise VoxelflowIndexError(
            f"{what}: too many indices ({len(items)}) for the 4 axes (C, I, J, K)"
        )
    items += [slice(None)] * (4 - len(items))
    ranges = []
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        whole = range(size)
        if isinstance(item, slice):
            selected = whole[item]
            if len(selected) == 0:
                raise VoxelflowIndexError(
                    f"{what}: slice {_fmt_slice(item)} on axis {_AXES[axis]} (size {size}) "
                    "selects no voxels; pass a slice that selects at least one"
                )
            ranges.append(selected)
            continue
        index = _as_int(item)
        if index is None:
            raise VoxelflowTypeError(
                f"{what}: index {item!r} of type {type(item).__name__} on axis {_AXES[axis]} "
                f"is not supported; use {_SUPPORTED} (fancy and boolean indexing are not "
                "supported: read the bounding region, then index the tensor)"
            )
        if not -size <= index < size:
            raise VoxelflowIndexError(
                f"{what}: index {index} is out of range for axis {_AXES[axis]} with size {size}"
            )
        index %= size
        ranges.append(range(index, index + 1))
    return tuple(ranges)  # type: ignore[return-value]


def _fmt_slice(item: slice) -> str:
    parts = ["" if v is None else str(v) for v in (item.start, item.stop, item.step)]
    return ":".join(parts[:2]) + (f":{parts[2]}" if item.step is not None else "")


def compose(parent: Ranges, child: Ranges) -> Ranges:
    """Ranges in the grandparent's space of ``child`` taken inside ``parent``."""
    out = []
    for p, c in zip(parent, child, strict=True):
        start = p[c[0]]
        step = p.step * c.step
        out.append(range(start, start + step * len(c), step))
    return tuple(out)  # type: ignore[return-value]


def to_box(ranges: Ranges) -> tuple[Box, tuple[int, ...]]:
    """The positive-step box covering ``ranges`` and the axes to flip after reading."""
    box = []
    flips = []
    for axis, r in enumerate(ranges):
        if r.step > 0:
            box.append(slice(r.start, r[-1] + 1, r.step))
        else:
            box.append(slice(r[-1], r.start + 1, -r.step))
            flips.append(axis)
    return tuple(box), tuple(flips)  # type: ignore[return-value]


def box_shape(box: Box) -> tuple[int, int, int, int]:
    """Shape of the array a backend returns for ``box``."""
    return tuple(len(range(s.start, s.stop, s.step)) for s in box)  # type: ignore[return-value]


def is_whole(ranges: Ranges, shape: Sequence[int]) -> bool:
    """Whether ``ranges`` select every voxel of ``shape`` in order."""
    return all(r == range(n) for r, n in zip(ranges, shape, strict=True))


def region_affine(affine: np.ndarray, ranges: Ranges) -> np.ndarray:
    """Affine of a region: origin moved to its first voxel, axes scaled by steps.

    A negative step flips the corresponding column, which is exactly the affine
    of the flipped array.
    """
    spatial = ranges[1:]
    transform = np.eye(4)
    for axis, r in enumerate(spatial):
        transform[axis, axis] = r.step
        transform[axis, 3] = r.start
    return np.asarray(affine, dtype=np.float64) @ transform
