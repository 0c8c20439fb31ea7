"""``GridSampler``: every patch of a regular grid that covers a whole volume.

The grid along each axis starts at the first voxel, advances by
``patch_size - patch_overlap`` and ends with a patch flush with the last voxel,
so every voxel is covered and every patch lies inside the volume. With
``padding_mode`` the grid covers the volume padded by ``patch_overlap // 2``
before and the rest of the overlap after each axis (more when the volume is
smaller than a patch); the padding is never materialised: patches that stick
out are padded on the fly when they are read (:func:`~voxelflow.patches.reading.read_patch`).

Patches come in grid order with ``k`` the slowest index, so the ``k`` of the
patches never decreases: :class:`~voxelflow.PatchAggregator` relies on it to
finish slabs of its on-disk output as the grid passes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from voxelflow._errors import VoxelflowIndexError, VoxelflowTypeError, VoxelflowValueError
from voxelflow._geometry import Triplet, describe, to_triplet
from voxelflow.patches.base import PatchSampler, check_patch_fits
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.reading import subject_name
from voxelflow.subject import Subject

Padding = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def parse_patch_overlap(patch_overlap: int | Sequence[int], patch_size: Sequence[int]) -> Triplet:
    """Validate an overlap: non-negative and smaller than the patch along every axis."""
    overlap = to_triplet(patch_overlap, "patch_overlap")
    if any(o < 0 for o in overlap):
        raise VoxelflowValueError(f"patch_overlap must be non-negative, got {overlap}")
    if any(o >= p for o, p in zip(overlap, patch_size, strict=True)):
        raise VoxelflowValueError(
            f"patch_overlap {describe(overlap)} must be smaller than patch_size "
            f"{describe(patch_size)} along every axis (the grid would not advance); "
            "pass a smaller patch_overlap"
        )
    return overlap


def grid_padding(
    spatial_shape: Sequence[int], patch_size: Sequence[int], patch_overlap: Sequence[int]
) -> Padding:
    """Voxels a padded grid adds ``(before, after)`` each axis.

    ``patch_overlap // 2`` before and the rest of the overlap after, so that
    the margins the ``"crop"`` mode trims from the outer patches fall in the
    padding; plus, split evenly, whatever a volume smaller than a patch lacks.
    """
    padding = []
    for size, patch, overlap in zip(spatial_shape, patch_size, patch_overlap, strict=True):
        before, after = overlap // 2, overlap - overlap // 2
        missing = max(0, patch - (size + before + after))
        padding.append((before + missing // 2, after + missing - missing // 2))
    return tuple(padding)  # type: ignore[return-value]


def grid_starts(length: int, patch: int, overlap: int) -> list[int]:
    """First voxels of the patches along one axis of ``length`` voxels (``length >= patch``)."""
    stride = patch - overlap
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)  # the last patch flush with the border
    return starts


def grid_locations(
    spatial_shape: Sequence[int],
    patch_size: Sequence[int],
    patch_overlap: Sequence[int],
    padding: Padding | None = None,
) -> list[PatchLocation]:
    """Every location of the grid, ``k`` slowest (``k`` never decreases along the list)."""
    padding = padding or ((0, 0), (0, 0), (0, 0))
    axes = []
    for size, patch, overlap, (before, after) in zip(
        spatial_shape, patch_size, patch_overlap, padding, strict=True
    ):
        starts = grid_starts(size + before + after, patch, overlap)
        axes.append([start - before for start in starts])
    shape = tuple(patch_size)
    return [
        PatchLocation((i, j, k), shape)  # type: ignore[arg-type]
        for k in axes[2]
        for j in axes[1]
        for i in axes[0]
    ]


class GridSampler(PatchSampler, Dataset):  # type: ignore[type-arg]
    """All patches of a regular grid over a subject, read lazily one by one.

    A map-style dataset: ``len(sampler)`` patches, ``sampler[n]`` reads the
    ``n``-th (a new :class:`~voxelflow.Subject` of copies, with
    ``"patch_location"``) from each image's backend, so a lazy image is never
    read whole. It can also drive a Queue through :meth:`sample_locations`.

    Args:
        subject: the subject to cut; may be ``None`` when a Queue drives the
            sampler (it passes each subject to :meth:`sample_locations`).
        patch_size: an int or three ints.
        patch_overlap: voxels shared by neighbouring patches (an int or three
            ints), smaller than ``patch_size``. Odd overlaps are fine: the
            ``"crop"`` mode of :class:`~voxelflow.PatchAggregator` trims
            ``overlap // 2`` before and the rest after.
        padding_mode: ``None`` (no padding: a patch larger than the volume is an
            error), a NumPy mode (``"constant"``, ``"edge"``, ``"reflect"``,
            ``"symmetric"``) or a number (constant value). With padding the grid
            covers the volume padded by :func:`grid_padding`, so border voxels
            get the same context as the others; the aggregator gives back the
            original shape.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 20, 20, 10)))
        >>> sampler = tio.GridSampler(subject, patch_size=(8, 8, 10), patch_overlap=(2, 2, 0))
        >>> len(sampler), sampler.locations[-1].index_fin
        (9, (20, 20, 10))
        >>> tuple(sampler[0].t1.shape)
        (1, 8, 8, 10)
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        patch_overlap: int | Sequence[int] = 0,
        padding_mode: str | float | None = None,
    ) -> None:
        if patch_size is None:
            raise VoxelflowTypeError("GridSampler needs patch_size (an int or three ints)")
        super().__init__(patch_size, padding_mode)
        self.patch_overlap = parse_patch_overlap(patch_overlap, self.patch_size)
        self.subject = subject
        self.locations: list[PatchLocation] = []
        self.spatial_shape: Triplet | None = None
        self.padding: Padding = ((0, 0), (0, 0), (0, 0))
        if subject is not None:
            if not isinstance(subject, Subject):
                raise VoxelflowTypeError(
                    f"GridSampler: subject must be a voxelflow Subject, got "
                    f"{type(subject).__name__}; wrap images with tio.Subject(name=image)"
                )
            self.spatial_shape = subject.spatial_shape
            self.padding = self.padding_for(self.spatial_shape)
            self.locations = self._grid(subject)

    # ---------------------------------------------------------------- the grid
    @property
    def padded(self) -> bool:
        """Whether the grid covers a padded volume."""
        return self.padding_mode is not None

    def padding_for(self, spatial_shape: Sequence[int]) -> Padding:
        """The padding ``(before, after)`` per axis this sampler uses for ``spatial_shape``."""
        if not self.padded:
            return ((0, 0), (0, 0), (0, 0))
        return grid_padding(spatial_shape, self.patch_size, self.patch_overlap)

    def _grid(self, subject: Subject) -> list[PatchLocation]:
        shape = subject.spatial_shape
        if not self.padded:
            check_patch_fits(shape, self.patch_size, what=subject_name(subject))
        return grid_locations(shape, self.patch_size, self.patch_overlap, self.padding_for(shape))

    def sample_locations(
        self,
        subject: Subject,
        num_patches: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[PatchLocation]:
        """The grid of ``subject`` in grid order; with ``num_patches``, that many of
        its locations drawn without replacement with ``generator``."""
        locations = self._grid(subject)
        if num_patches is None:
            return locations
        if not 0 <= num_patches <= len(locations):
            raise VoxelflowValueError(
                f"{subject_name(subject)}: num_patches={num_patches} but the grid of patch "
                f"{describe(self.patch_size)} with overlap {describe(self.patch_overlap)} has "
                f"{len(locations)} patches; ask for at most {len(locations)}"
            )
        order = torch.randperm(len(locations), generator=generator)[:num_patches]
        return [locations[n] for n in order.tolist()]

    # ---------------------------------------------------------------- dataset
    def __len__(self) -> int:
        self._need_subject()
        return len(self.locations)

    def __getitem__(self, index: int) -> Subject:
        self._need_subject()
        count = len(self.locations)
        if not -count <= index < count:
            raise VoxelflowIndexError(
                f"GridSampler: patch {index} out of range; the grid has {count} patches"
            )
        assert self.subject is not None
        return self.extract(self.subject, self.locations[index])

    def _need_subject(self) -> None:
        if self.subject is None:
            raise VoxelflowTypeError(
                "GridSampler was built without a subject: pass one to use it as a dataset, "
                "or let a Queue call sample_locations(subject)"
            )

    def __repr__(self) -> str:
        return (
            f"GridSampler(patch_size={self.patch_size}, patch_overlap={self.patch_overlap}, "
            f"padding_mode={self.padding_mode!r}, patches={len(self.locations)})"
        )
