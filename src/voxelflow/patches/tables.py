"""Coarse sampling tables: drawing voxels from a weight map of any size, and their cache.

Weighted and label sampling never build a full-size probability array and
never call ``torch.multinomial`` on a volume (it stops at 2^24 categories).
Once per source (cached across patches and epochs by the backend's
``cache_key``), the region of valid centres is cut into blocks of 16×16×16
voxels and one float64 number per block is stored: the sum of the weights, or
the count of voxels of a class. The map is read for this slab by slab (16
planes along ``k``, a run of bytes in the file), so memory stays at one slab; a stream (``.nii.gz``) or a
whole-volume fallback is read once, whole. A draw then picks a block from the
cumulative sums (``searchsorted`` in float64) and a voxel within that block
from the block's own values, reading just that block. For a 724×868×724 map a
table is about 90 thousand numbers.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from voxelflow._geometry import Triplet
from voxelflow.image import Image
from voxelflow.patches import _contract
from voxelflow.patches.reading import read_region, reads_whole

BLOCK: Triplet = (16, 16, 16)
"""Block size of the coarse sampling tables (voxels along I, J, K)."""

MAX_TABLES = 1024  # sampling tables a sampler keeps (least recently used dropped)

Masses = Callable[[np.ndarray], list[np.ndarray]]
Pick = Callable[[np.ndarray, np.ndarray], np.ndarray]


def uniforms(n: int, generator: torch.Generator | None) -> np.ndarray:
    """``n`` float64 numbers in ``[0, 1)`` from ``generator``."""
    return torch.rand(n, generator=generator, dtype=torch.float64).numpy()


@dataclass(frozen=True)
class BlockTable:
    """Coarse sampling table over the region of valid centres.

    ``cumsum[b]`` is the running float64 sum of the per-block masses in C
    order over the ``grid`` of blocks; the region starts at voxel ``origin``
    and spans ``extent`` voxels.
    """

    origin: Triplet
    extent: Triplet
    block: Triplet
    grid: Triplet
    cumsum: np.ndarray

    @property
    def total(self) -> float:
        return float(self.cumsum[-1]) if self.cumsum.size else 0.0

    def block_slices(self, flat: int) -> tuple[slice, slice, slice]:
        """Image-space slices of block number ``flat``."""
        index = np.unravel_index(flat, self.grid)
        slices = []
        for b, o, e, size in zip(index, self.origin, self.extent, self.block, strict=True):
            start = o + int(b) * size
            slices.append(slice(start, min(start + size, o + e)))
        return tuple(slices)  # type: ignore[return-value]

    def draw_blocks(self, n: int, generator: torch.Generator | None) -> np.ndarray:
        """``n`` block numbers, each with probability mass / total."""
        targets = uniforms(n, generator) * self.total
        blocks = np.searchsorted(self.cumsum, targets, side="right")
        last = int(np.flatnonzero(np.diff(self.cumsum, prepend=0.0) > 0)[-1])
        return np.minimum(blocks, last)  # float rounding at the very top


def build_tables(
    image: Image, origin: Triplet, extent: Triplet, masses: Masses, block: Triplet = BLOCK
) -> list[BlockTable]:
    """Tables of the masses ``masses(slab)`` gives, reading ``image`` one slab at a time.

    Slabs are ``block[2]`` planes along ``k``, the slowest axis of a NIfTI file
    and of a NIfTI-Zarr's chunks, so each slab is one run of bytes (or of
    chunks). ``masses`` maps a ``(C, I, J, k)`` slab to a list of ``(I, J, k)``
    arrays (weights, or masks of classes) whose block sums make one table each.
    Sources that :func:`~voxelflow.patches.reading.reads_whole` are read once, whole.
    """
    grid = tuple(-(-e // b) for e, b in zip(extent, block, strict=True))
    i_starts = np.arange(0, extent[0], block[0])
    j_starts = np.arange(0, extent[1], block[1])
    ij = (slice(origin[0], origin[0] + extent[0]), slice(origin[1], origin[1] + extent[1]))
    whole = None
    if reads_whole(image):
        whole = read_region(image, (*ij, slice(origin[2], origin[2] + extent[2]))).cpu().numpy()
    sums: list[np.ndarray] | None = None
    for bk in range(grid[2]):
        k0, k1 = bk * block[2], min((bk + 1) * block[2], extent[2])
        if whole is not None:
            slab = whole[..., k0:k1]
        else:
            slab = read_region(image, (*ij, slice(origin[2] + k0, origin[2] + k1))).cpu().numpy()
        per_mass = masses(slab)
        del slab
        if sums is None:
            sums = [np.zeros(grid, dtype=np.float64) for _ in per_mass]
        for out, mass in zip(sums, per_mass, strict=True):
            plane = mass.sum(axis=2, dtype=np.float64)
            out[..., bk] = np.add.reduceat(
                np.add.reduceat(plane, i_starts, axis=0), j_starts, axis=1
            )
        del per_mass
    assert sums is not None
    return [
        BlockTable(origin, extent, block, grid, np.cumsum(s.ravel(), dtype=np.float64))  # type: ignore[arg-type]
        for s in sums
    ]


def draw_in_blocks(
    image: Image,
    table: BlockTable,
    blocks: np.ndarray,
    generator: torch.Generator,
    pick: Pick,
) -> np.ndarray:
    """One voxel ``(i, j, k)`` inside each of the chosen ``blocks`` (rows in input order).

    ``pick(block_values (C, a, b, c), uniforms)`` returns flat indices within
    the block. Blocks are read once each, in sorted order (so the stream of
    random numbers does not depend on timing); a source that reads whole is
    read once for all of them.
    """
    out = np.empty((len(blocks), 3), dtype=np.int64)
    whole = None
    if reads_whole(image):
        region = tuple(slice(o, o + e) for o, e in zip(table.origin, table.extent, strict=True))
        whole = read_region(image, region).cpu().numpy()
    for flat in np.unique(blocks):
        rows = np.flatnonzero(blocks == flat)
        slices = table.block_slices(int(flat))
        if whole is None:
            values = read_region(image, slices).cpu().numpy()
        else:
            local = tuple(
                slice(s.start - o, s.stop - o) for s, o in zip(slices, table.origin, strict=True)
            )
            values = whole[(slice(None), *local)]
        voxels = pick(values, uniforms(len(rows), generator))
        local_ijk = np.stack(np.unravel_index(voxels, values.shape[1:]), axis=1)
        out[rows] = local_ijk + np.asarray([s.start for s in slices])
    return out


@dataclass(frozen=True)
class _Request:
    """A cache key that carries what building needs, compared by ``key`` alone."""

    key: Hashable
    build: Callable[[], list[BlockTable]] = field(compare=False, hash=False)


def _build(request: _Request) -> list[BlockTable]:
    return request.build()


class TableCache:
    """Sampling tables by source and request; drops itself on pickling.

    Sources with a ``cache_key`` (files: path, size, modification time and
    region) share tables across private copies, epochs and processes'
    lifetimes: a least-recently-used cache of :data:`MAX_TABLES` entries
    (``functools.lru_cache``). Sources without one (tensors) keep their tables
    beside their backend object, weakly, so they go when it goes.
    """

    def __init__(self) -> None:
        self._keyed = functools.lru_cache(maxsize=MAX_TABLES)(_build)
        self._by_object: weakref.WeakKeyDictionary[Any, dict[Hashable, list[BlockTable]]]
        self._by_object = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(
        self, image: Image, request: Hashable, build: Callable[[], list[BlockTable]]
    ) -> list[BlockTable]:
        """The tables of ``request`` over ``image``'s values, built by ``build()`` once."""
        backend = image.dataobj
        key = _contract.cache_key(backend)
        if key is not None:
            return self._keyed(_Request((key, request), build))
        with self._lock:
            tables = self._by_object.setdefault(backend, {})
            found = tables.get(request)
        if found is None:
            found = build()  # outside the lock: other threads keep sampling
            with self._lock:
                tables[request] = found
        return found

    def __len__(self) -> int:
        return self._keyed.cache_info().currsize + sum(len(t) for t in self._by_object.values())

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
