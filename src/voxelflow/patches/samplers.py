"""Random patch samplers: uniform, weighted by a map, and centred on label classes.

**Centres and corners.** A patch of ``p`` voxels along an axis has its centre
at voxel ``p // 2`` of the patch (for an even ``p``, the voxel just after the
midpoint), so ``corner = centre - p // 2``. Without padding the valid centres
along an axis of ``s`` voxels are ``p // 2 ... s - p + p // 2``, which map one
to one onto the valid corners ``0 ... s - p``: every corner is reachable, for
odd and even sizes, including ``p == s`` (one corner). With ``padding_mode``
every voxel may be a centre and the patch is padded where it sticks out.

**Sampling tables.** Weighted and label sampling never build a full-size
probability array and never call ``torch.multinomial`` on a volume (it stops
at 2^24 categories). Once per subject (and cached across patches and epochs,
keyed by the file, its size and modification time, or the tensor), the
region of valid centres is cut into blocks of 16×16×16 voxels and one float64
number per block is stored: the sum of the weights, or the count of voxels of
each class. The map is read for this slab by slab (16 planes at a time), so
memory stays at one slab. A draw then picks a block from the cumulative sums
(``searchsorted`` in float64) and a voxel within that block from the block's
own values, reading just that block. For a 724×868×724 map the table is about
90 thousand numbers per class.

**Randomness.** Every draw takes an explicit ``torch.Generator``; the same
generator state gives the same locations.
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowTypeError,
    VoxelflowValueError,
    did_you_mean,
)
from voxelflow._random import derive_seed, fresh_seed, make_generator
from voxelflow.backends.nifti import NiftiGzBackend
from voxelflow.image import LABEL, Image
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.sampler import (
    PatchSampler,
    TypeTriplet,
    check_patch_fits,
    describe,
    subject_name,
)
from voxelflow.subject import Subject

BLOCK: TypeTriplet = (16, 16, 16)
"""Block size of the coarse sampling tables (voxels along I, J, K)."""

_CHUNK = 64  # locations drawn at a time when a sampler is iterated as a dataset
_MAX_TABLES = 1024  # sampling tables a sampler keeps (least recently used dropped)


# ---------------------------------------------------------------------- reading
def cheap_region_reads(image: Image) -> bool:
    """Whether reading a small region of ``image`` costs about its size.

    True for loaded images and random-access backends (``.nii`` memory maps,
    chunked stores); false for whole-stream formats (``.nii.gz`` without an
    index) and full-read fallbacks. A backend may declare ``random_access``.
    """
    if getattr(image, "_data", None) is not None:
        return True
    backend = image.dataobj
    for candidate in (backend, getattr(backend, "parent", None)):
        if candidate is None:
            continue
        declared = getattr(candidate, "random_access", None)
        if declared is not None:
            return bool(declared)
        if candidate.in_memory:
            return True
        if not candidate.region_reads or isinstance(candidate, NiftiGzBackend):
            return False
    return True


def read_region(image: Image, slices: Sequence[slice]) -> torch.Tensor:
    """The ``(C, ...)`` values of a spatial region, without caching anything in ``image``.

    The result may be a view of a loaded image's data: treat it as read-only.
    """
    key = (slice(None), *slices)
    data = getattr(image, "_data", None)
    if data is not None:
        return data[key]  # type: ignore[no-any-return]
    return image.dataobj[key]  # type: ignore[index,no-any-return]


def private_copy(subject: Subject, load: Callable[[Image], bool] | None = None) -> Subject:
    """A copy of ``subject`` whose images are copies of the caller's (never touched).

    ``load(image)`` says which copies to read whole into memory now (for
    example those without cheap region reads); the caller's images stay as
    they were, lazy or not.
    """
    new = subject.copy()
    for name, image in subject.images.items():
        twin = copy.copy(image)
        twin.metadata = dict(image.metadata)
        if load is not None and load(twin):
            twin.load()
        dict.__setitem__(new, name, twin)
    return new


# ---------------------------------------------------------------------- geometry
def centre_bounds(
    spatial_shape: Sequence[int], patch_size: Sequence[int], padded: bool
) -> tuple[TypeTriplet, TypeTriplet]:
    """``(first, count)`` of the valid patch centres along each axis."""
    if padded:
        return (0, 0, 0), tuple(int(s) for s in spatial_shape)  # type: ignore[return-value]
    first = tuple(p // 2 for p in patch_size)
    count = tuple(s - p + 1 for s, p in zip(spatial_shape, patch_size, strict=True))
    return first, count  # type: ignore[return-value]


def corners_from_centres(centres: np.ndarray, patch_size: Sequence[int]) -> list[PatchLocation]:
    """``corner = centre - patch_size // 2`` for each row of ``centres`` (N, 3)."""
    half = np.asarray([p // 2 for p in patch_size], dtype=np.int64)
    size = tuple(int(p) for p in patch_size)
    return [PatchLocation(tuple(int(v) for v in row), size) for row in centres - half]  # type: ignore[arg-type]


def _uniform(n: int, generator: torch.Generator | None) -> np.ndarray:
    return torch.rand(n, generator=generator, dtype=torch.float64).numpy()


# ---------------------------------------------------------------------- tables
@dataclass(frozen=True)
class BlockTable:
    """Coarse sampling table over the region of valid centres.

    ``cumsum[b]`` is the running float64 sum of the per-block masses in C
    order over the ``grid`` of blocks; the region starts at voxel ``origin``
    and spans ``extent`` voxels.
    """

    origin: TypeTriplet
    extent: TypeTriplet
    block: TypeTriplet
    grid: TypeTriplet
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
        targets = _uniform(n, generator) * self.total
        blocks = np.searchsorted(self.cumsum, targets, side="right")
        last = int(np.flatnonzero(np.diff(self.cumsum, prepend=0.0) > 0)[-1])
        return np.minimum(blocks, last)  # float rounding at the very top


def _block_starts(extent: int, size: int) -> np.ndarray:
    return np.arange(0, extent, size)


def build_tables(
    image: Image,
    origin: TypeTriplet,
    extent: TypeTriplet,
    masses: Callable[[np.ndarray], list[np.ndarray]],
    block: TypeTriplet = BLOCK,
) -> list[BlockTable]:
    """Tables of the masses ``masses(slab)`` gives, reading ``image`` one slab at a time.

    ``masses`` maps a ``(C, i, J, K)`` slab to a list of ``(i, J, K)`` arrays
    (weights, or masks of classes) whose block sums make one table each.
    Sources without cheap region reads (``.nii.gz``) are read once, whole.
    """
    grid = tuple(-(-e // b) for e, b in zip(extent, block, strict=True))
    j_starts = _block_starts(extent[1], block[1])
    k_starts = _block_starts(extent[2], block[2])
    jk = (slice(origin[1], origin[1] + extent[1]), slice(origin[2], origin[2] + extent[2]))
    whole = None
    if not cheap_region_reads(image):
        whole = read_region(image, (slice(origin[0], origin[0] + extent[0]), *jk)).cpu().numpy()
    sums: list[np.ndarray] | None = None
    for bi in range(grid[0]):
        i0 = bi * block[0]
        i1 = min(i0 + block[0], extent[0])
        if whole is not None:
            slab = whole[:, i0:i1]
        else:
            region = (slice(origin[0] + i0, origin[0] + i1), *jk)
            slab = read_region(image, region).cpu().numpy()
        per_mass = masses(slab)
        if sums is None:
            sums = [np.zeros(grid, dtype=np.float64) for _ in per_mass]
        for out, mass in zip(sums, per_mass, strict=True):
            plane = mass.sum(axis=0, dtype=np.float64)
            out[bi] = np.add.reduceat(np.add.reduceat(plane, j_starts, axis=0), k_starts, axis=1)
    assert sums is not None
    return [
        BlockTable(origin, extent, block, grid, np.cumsum(s.ravel(), dtype=np.float64))  # type: ignore[arg-type]
        for s in sums
    ]


class _TableCache:
    """Sampling tables by source, least recently used dropped; drops itself on pickling."""

    def __init__(self) -> None:
        self._tables: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, build: Callable[[], Any], anchor: Any = None) -> Any:
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        value = build()  # outside the lock: other threads keep sampling
        with self._lock:
            self._tables[key] = value
            while len(self._tables) > _MAX_TABLES:
                self._tables.popitem(last=False)
        if anchor is not None:  # forget tables of tensors that are gone (ids get reused)
            weakref.finalize(anchor, _forget, weakref.ref(self), key)
        return value

    def __len__(self) -> int:
        return len(self._tables)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


def _forget(cache_ref: weakref.ref[_TableCache], key: Any) -> None:
    cache = cache_ref()
    if cache is not None:
        with cache._lock:
            cache._tables.pop(key, None)


def source_key(image: Image) -> tuple[tuple[Any, ...], Any]:
    """``(key, anchor)``: what identifies ``image``'s values for caching tables.

    Files: path, size, modification time and window (no anchor needed);
    tensors: identity and version counter, with the tensor as the anchor whose
    collection evicts the entry.
    """
    data = getattr(image, "_data", None)
    backend = image.dataobj
    if not backend.in_memory and backend.path is not None and "://" not in backend.path:
        stat = os.stat(backend.path)
        ranges = getattr(backend, "ranges", None)
        window = None if ranges is None else tuple((r.start, r.stop, r.step) for r in ranges)
        return ("file", backend.path, stat.st_size, stat.st_mtime_ns, window), None
    anchor = data if data is not None else getattr(backend, "tensor", backend)
    version = getattr(anchor, "_version", 0)
    return ("object", id(anchor), version, tuple(image.shape)), anchor


# ---------------------------------------------------------------------- samplers
class RandomSampler(PatchSampler, IterableDataset):  # type: ignore[type-arg]
    """Base of the random samplers: an iterable dataset of patches and a Queue's driver.

    Args:
        subject: the subject to sample when the sampler is iterated as a
            dataset; a Queue passes its own subjects, so this may be ``None``
            there (or the first subject, as in TorchIO's examples).
        patch_size: an int or three ints.
        num_patches: patches per iteration as a dataset; ``None`` for an
            endless stream.
        padding_mode: ``None`` (patches must fit in the volume), a NumPy mode
            or a number; with padding every voxel may be a patch centre.
        seed: seeds the sampler's own generator (used when none is passed).
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        num_patches: int | None = None,
        padding_mode: str | float | None = None,
        seed: int | None = None,
    ) -> None:
        if patch_size is None and subject is not None and not isinstance(subject, Subject):
            subject, patch_size = None, subject  # TorchIO 1.x order: Sampler(patch_size)
        if patch_size is None:
            raise VoxelflowTypeError(
                f"{type(self).__name__} needs patch_size (an int or three ints)"
            )
        if subject is not None and not isinstance(subject, Subject):
            raise VoxelflowTypeError(
                f"{type(self).__name__}: subject must be a voxelflow Subject, got "
                f"{type(subject).__name__}; wrap images with tio.Subject(name=image)"
            )
        super().__init__(patch_size, padding_mode)
        if num_patches is not None and (not isinstance(num_patches, int) or num_patches < 0):
            raise VoxelflowValueError(
                f"num_patches must be a non-negative int or None, got {num_patches!r}"
            )
        self.subject = subject
        self.num_patches = num_patches
        self.seed = fresh_seed(seed)
        self.generator = make_generator(self.seed)
        self._iterations = 0
        self._tables = _TableCache()
        if subject is not None:
            self.check_subject(subject)

    # ------------------------------------------------------------ locations
    def check_subject(self, subject: Subject) -> None:
        """Raise a clear error if ``subject`` cannot be sampled (reads headers only)."""
        if not subject.images:
            raise VoxelflowValueError(f"{type(self).__name__}: the subject has no images")
        if self.padding_mode is None:
            check_patch_fits(subject.spatial_shape, self.patch_size, what=subject_name(subject))

    def sample_locations(
        self,
        subject: Subject,
        num_patches: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[PatchLocation]:
        """``num_patches`` (default 1) random locations in ``subject``.

        Reads headers and, for weighted and label sampling, the sampling map
        (once per subject: the tables are cached) and one block per draw.
        """
        self.check_subject(subject)
        count = 1 if num_patches is None else int(num_patches)
        if count < 0:
            raise VoxelflowValueError(f"num_patches must be non-negative, got {num_patches}")
        if count == 0:
            return []
        generator = self.generator if generator is None else generator
        first, extent = centre_bounds(
            subject.spatial_shape, self.patch_size, self.padding_mode is not None
        )
        centres = self._sample_centres(subject, count, generator, first, extent)
        return corners_from_centres(centres, self.patch_size)

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: TypeTriplet,
        extent: TypeTriplet,
    ) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------ patches
    def __call__(
        self,
        subject: Subject,
        num_patches: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Subject]:
        """Patches of ``subject`` (copies): ``num_patches`` of them, or endless if ``None``."""
        generator = self.generator if generator is None else generator
        self.check_subject(subject)
        working = private_copy(subject, lambda image: not cheap_region_reads(image))
        remaining = num_patches
        while remaining is None or remaining > 0:
            chunk = _CHUNK if remaining is None else min(_CHUNK, remaining)
            for location in self.sample_locations(working, chunk, generator):
                yield self.extract(working, location)
            if remaining is not None:
                remaining -= chunk

    def __iter__(self) -> Iterator[Subject]:
        if self.subject is None:
            raise VoxelflowTypeError(
                f"{type(self).__name__} was built without a subject: pass one to iterate it as "
                "a dataset, or let a Queue drive it"
            )
        worker = get_worker_info()
        total = self.num_patches
        key = [self.seed, self._iterations]
        self._iterations += 1
        if worker is not None:  # split the patches, not repeat them, across workers
            key += [worker.seed - worker.id, worker.id]
            if total is not None:
                total = total // worker.num_workers + (worker.id < total % worker.num_workers)
        yield from self(self.subject, total, make_generator(derive_seed(*key)))

    def __len__(self) -> int:
        if self.num_patches is None:
            raise TypeError(f"{type(self).__name__} with num_patches=None is endless")
        return self.num_patches


class UniformSampler(RandomSampler):
    """Patches at uniformly random positions: every valid corner equally likely.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 10, 10, 10)))
        >>> sampler = tio.UniformSampler(subject, patch_size=4, num_patches=3, seed=0)
        >>> [tuple(patch.t1.shape) for patch in sampler]
        [(1, 4, 4, 4), (1, 4, 4, 4), (1, 4, 4, 4)]
    """

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: TypeTriplet,
        extent: TypeTriplet,
    ) -> np.ndarray:
        offsets = np.stack(
            [torch.randint(0, e, (count,), generator=generator).numpy() for e in extent], axis=1
        )
        return offsets + np.asarray(first)


class _TableSampler(RandomSampler):
    """Shared machinery of the samplers that draw from block tables."""

    def _map_image(self, subject: Subject, name: str | None, what: str) -> Image:
        if name is None:
            raise VoxelflowValueError(f"{type(self).__name__}: {what} name is missing")
        try:
            image = dict.__getitem__(subject, name)
        except KeyError:
            names = tuple(subject.images)
            raise VoxelflowKeyError(
                f"{subject_name(subject)}: {type(self).__name__} needs the image {name!r} "
                f"({what}), but the subject has {', '.join(names) or 'no images'}."
                + did_you_mean(name, names)
            ) from None
        if not isinstance(image, Image):
            raise VoxelflowTypeError(
                f"{type(self).__name__}: subject entry {name!r} must be an image, got "
                f"{type(image).__name__}"
            )
        return image

    def _tables_for(
        self,
        image: Image,
        first: TypeTriplet,
        extent: TypeTriplet,
        flavour: Any,
        masses: Callable[[np.ndarray], list[np.ndarray]],
    ) -> list[BlockTable]:
        key, anchor = source_key(image)
        return self._tables.get(  # type: ignore[no-any-return]
            (key, first, extent, flavour),
            lambda: build_tables(image, first, extent, masses),
            anchor,
        )

    def _fine_draws(
        self,
        image: Image,
        table: BlockTable,
        blocks: np.ndarray,
        generator: torch.Generator,
        pick: Callable[[np.ndarray, np.ndarray], np.ndarray],
        out: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        """Fill ``out[rows]`` with voxels drawn inside the chosen ``blocks``.

        ``pick(block_values (C, a, b, c), uniforms)`` returns flat indices
        within the block. Blocks are read once each, in sorted order (so the
        stream of random numbers does not depend on timing).
        """
        whole = None
        if not cheap_region_reads(image):  # one read of the region instead of one per block
            region = tuple(slice(o, o + e) for o, e in zip(table.origin, table.extent, strict=True))
            whole = read_region(image, region).cpu().numpy()
        for flat in np.unique(blocks):
            which = rows[blocks == flat]
            slices = table.block_slices(int(flat))
            if whole is None:
                values = read_region(image, slices).cpu().numpy()
            else:
                local = tuple(
                    slice(s.start - o, s.stop - o)
                    for s, o in zip(slices, table.origin, strict=True)
                )
                values = whole[(slice(None), *local)]
            voxels = pick(values, _uniform(len(which), generator))
            shape = values.shape[1:]
            local_ijk = np.stack(np.unravel_index(voxels, shape), axis=1)
            out[which] = local_ijk + np.asarray([s.start for s in slices])


class WeightedSampler(_TableSampler):
    """Patch centres drawn with probability proportional to a map in the subject.

    The map (one channel, any numeric dtype, non-negative) is an image of the
    subject named by ``probability_map``. Only valid centres count (with no
    padding, the margins of ``patch_size // 2`` are never centres). Works on
    volumes of any size, in float64, reading the map slab by slab once per
    subject (see the module docstring).

    Example:
        >>> import torch, voxelflow as tio
        >>> weights = torch.zeros(1, 9, 9, 9)
        >>> weights[0, 6, 2, 4] = 1.0
        >>> subject = tio.Subject(
        ...     t1=tio.ScalarImage(torch.rand(1, 9, 9, 9)),
        ...     sampling_weights=tio.ScalarImage(weights),
        ... )
        >>> sampler = tio.WeightedSampler(subject, patch_size=3, probability_map="sampling_weights")
        >>> sampler.sample_locations(subject, 2)[0].index  # centred on the only weighted voxel
        (5, 1, 3)
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        probability_map: str | None = None,
        num_patches: int | None = None,
        padding_mode: str | float | None = None,
        seed: int | None = None,
    ) -> None:
        if probability_map is None:
            raise VoxelflowValueError(
                "WeightedSampler needs probability_map=, the name of the image holding the "
                "sampling weights"
            )
        self.probability_map = probability_map
        super().__init__(subject, patch_size, num_patches, padding_mode, seed)

    def check_subject(self, subject: Subject) -> None:
        super().check_subject(subject)
        image = self._map_image(subject, self.probability_map, "probability map")
        if image.num_channels != 1:
            raise VoxelflowValueError(
                f"{image.path or self.probability_map}: a probability map has one channel, "
                f"got {image.num_channels}; keep the channel to sample from"
            )

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: TypeTriplet,
        extent: TypeTriplet,
    ) -> np.ndarray:
        image = self._map_image(subject, self.probability_map, "probability map")
        label = image.path or self.probability_map

        def masses(slab: np.ndarray) -> list[np.ndarray]:
            values = slab[0]
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise VoxelflowValueError(
                    f"{label}: the probability map has NaN or infinite weights; replace them"
                )
            if values.dtype.kind in "fi" and values.size and values.min() < 0:
                raise VoxelflowValueError(
                    f"{label}: the probability map has negative weights (minimum "
                    f"{values.min()}); weights must be non-negative"
                )
            return [values]

        (table,) = self._tables_for(image, first, extent, "weights", masses)
        if table.total <= 0:
            raise VoxelflowValueError(
                f"{label}: every weight of the probability map is zero among the valid patch "
                f"centres (patch {describe(self.patch_size)}); give some centres a positive weight "
                "or pass padding_mode= so the borders count"
            )
        blocks = table.draw_blocks(count, generator)
        out = np.empty((count, 3), dtype=np.int64)

        def pick(values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
            cumulative = np.cumsum(values[0].ravel(), dtype=np.float64)
            found = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
            positive = np.flatnonzero(values[0].ravel() > 0)
            return np.minimum(found, positive[-1])

        self._fine_draws(image, table, blocks, generator, pick, out, np.arange(count))
        return out

    def __repr__(self) -> str:
        return (
            f"WeightedSampler(patch_size={self.patch_size}, "
            f"probability_map={self.probability_map!r})"
        )


class LabelSampler(_TableSampler):
    """Patches centred on label classes, with class probabilities.

    ``label_probabilities`` maps a class to the probability that a patch is
    centred on a voxel of that class: with ``{0: 0.5, 1: 0.5}`` half the
    centres fall on label 1, however small label 1 is (TorchIO applies these
    per voxel instead). Within a class, every voxel (valid centre) is equally
    likely. Classes absent from a subject's valid centres are skipped and the
    others renormalised. ``None`` centres patches uniformly on the foreground
    (voxels that are not 0).

    A single-channel label map holds class values; a multi-channel map is
    one-hot: class ``k`` is channel ``k`` (voxels where it is positive), and
    the foreground is channels ``1...``.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = torch.zeros(1, 20, 20, 20, dtype=torch.uint8)
        >>> seg[0, 10, 10, 10] = 1  # one voxel of label 1
        >>> subject = tio.Subject(
        ...     t1=tio.ScalarImage(torch.rand(1, 20, 20, 20)), seg=tio.LabelMap(seg)
        ... )
        >>> sampler = tio.LabelSampler(
        ...     subject, patch_size=4, label_name="seg", label_probabilities={0: 0.5, 1: 0.5}
        ... )
        >>> locations = sampler.sample_locations(subject, 1000, torch.Generator().manual_seed(0))
        >>> on_one = sum(location.index == (8, 8, 8) for location in locations)
        >>> 400 < on_one < 600
        True
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        label_name: str | None = None,
        label_probabilities: Mapping[int, float] | None = None,
        num_patches: int | None = None,
        padding_mode: str | float | None = None,
        seed: int | None = None,
    ) -> None:
        self.label_name = label_name
        self.label_probabilities = _parse_probabilities(label_probabilities)
        super().__init__(subject, patch_size, num_patches, padding_mode, seed)

    def _label_image(self, subject: Subject) -> Image:
        if self.label_name is None:
            labels = [n for n, image in subject.images.items() if image.type == LABEL]
            if not labels:
                raise VoxelflowValueError(
                    f"{subject_name(subject)}: LabelSampler needs label_name= or a LabelMap in "
                    f"the subject; images: {', '.join(subject.images) or 'none'}"
                )
            return subject.images[labels[0]]
        return self._map_image(subject, self.label_name, "label map")

    def check_subject(self, subject: Subject) -> None:
        super().check_subject(subject)
        image = self._label_image(subject)
        channels = image.num_channels
        if channels > 1 and self.label_probabilities is not None:
            too_big = [c for c in self.label_probabilities if not 0 <= c < channels]
            if too_big:
                raise VoxelflowValueError(
                    f"{image.path or self.label_name}: a one-hot label map of {channels} channels "
                    f"has classes 0...{channels - 1}; label_probabilities names {too_big}"
                )

    def _classes(self, channels: int) -> list[Any]:
        if self.label_probabilities is None:
            return ["foreground"]
        return list(self.label_probabilities)

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: TypeTriplet,
        extent: TypeTriplet,
    ) -> np.ndarray:
        image = self._label_image(subject)
        channels = image.num_channels
        classes = self._classes(channels)

        def mask(values: np.ndarray, cls: Any) -> np.ndarray:
            if channels == 1:
                return np.asarray(values[0] != 0 if cls == "foreground" else values[0] == cls)
            if cls == "foreground":
                return np.asarray((values[1:] > 0).any(axis=0))
            return np.asarray(values[cls] > 0)

        def masses(slab: np.ndarray) -> list[np.ndarray]:
            return [mask(slab, cls) for cls in classes]

        tables = self._tables_for(image, first, extent, ("labels", tuple(classes)), masses)
        present = [n for n, table in enumerate(tables) if table.total > 0]
        if not present:
            wanted = "foreground voxels" if classes == ["foreground"] else f"classes {classes}"
            raise VoxelflowValueError(
                f"{image.path or self.label_name}: no {wanted} among the valid patch centres "
                f"(patch {describe(self.patch_size)}); check label_probabilities, or pass "
                "padding_mode= so the borders count"
            )
        if self.label_probabilities is None:
            weights = np.ones(1)
        else:
            weights = np.asarray([self.label_probabilities[classes[n]] for n in present])
            if weights.sum() <= 0:
                raise VoxelflowValueError(
                    f"{image.path or self.label_name}: the classes present "
                    f"{[classes[n] for n in present]} all have probability 0"
                )
        probabilities = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
        chosen = torch.multinomial(probabilities, count, replacement=True, generator=generator)
        chosen_classes = np.asarray(present)[chosen.numpy()]
        out = np.empty((count, 3), dtype=np.int64)
        for n in present:
            rows = np.flatnonzero(chosen_classes == n)
            if rows.size == 0:
                continue
            table = tables[n]
            blocks = table.draw_blocks(rows.size, generator)
            cls = classes[n]

            def pick(values: np.ndarray, uniforms: np.ndarray, cls: Any = cls) -> np.ndarray:
                voxels = np.flatnonzero(mask(values, cls).ravel())
                return voxels[
                    np.minimum((uniforms * voxels.size).astype(np.int64), voxels.size - 1)
                ]

            self._fine_draws(image, table, blocks, generator, pick, out, rows)
        return out

    def __repr__(self) -> str:
        return (
            f"LabelSampler(patch_size={self.patch_size}, label_name={self.label_name!r}, "
            f"label_probabilities={self.label_probabilities})"
        )


def _parse_probabilities(probabilities: Mapping[int, float] | None) -> dict[int, float] | None:
    if probabilities is None:
        return None
    if not isinstance(probabilities, Mapping) or not probabilities:
        raise VoxelflowValueError(
            f"label_probabilities must be a non-empty dict {{class: probability}}, got "
            f"{probabilities!r}"
        )
    parsed = {}
    for cls, probability in probabilities.items():
        if isinstance(cls, bool) or not isinstance(cls, int | np.integer):
            raise VoxelflowValueError(f"label_probabilities: classes must be ints, got {cls!r}")
        value = float(probability)
        if not np.isfinite(value) or value < 0:
            raise VoxelflowValueError(
                f"label_probabilities: probability of class {cls} must be a non-negative "
                f"number, got {probability!r}"
            )
        parsed[int(cls)] = value
    if sum(parsed.values()) <= 0:
        raise VoxelflowValueError(
            f"label_probabilities are all zero ({parsed}); give some class a positive probability"
        )
    return parsed
