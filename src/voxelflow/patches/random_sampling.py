"""Random patch samplers: the shared base (dataset iteration, worker splitting) and
``UniformSampler``.

**Centres and corners.** A patch of ``p`` voxels along an axis has its centre
at voxel ``p // 2`` of the patch (for an even ``p``, the voxel just after the
midpoint), so ``corner = centre - p // 2``. Without padding the valid centres
along an axis of ``s`` voxels are ``p // 2 ... s - p + p // 2``, which map one
to one onto the valid corners ``0 ... s - p``: every corner is reachable, for
odd and even sizes, including ``p == s`` (one corner). With ``padding_mode``
every voxel may be a centre and the patch is padded where it sticks out.

**Randomness.** Every draw takes an explicit ``torch.Generator``; the same
generator state gives the same locations. Iterated as a dataset inside
DataLoader workers, the patches are split between the workers, not repeated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowTypeError,
    VoxelflowValueError,
    did_you_mean,
)
from voxelflow._geometry import Triplet
from voxelflow._random import derive_seed, fresh_seed, make_generator
from voxelflow.image import Image
from voxelflow.patches.base import PatchSampler, check_patch_fits
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.reading import private_copy, reads_whole, subject_name
from voxelflow.patches.tables import TableCache
from voxelflow.subject import Subject

CHUNK = 64  # locations drawn at a time when a sampler is iterated as a dataset


def centre_bounds(
    spatial_shape: Sequence[int], patch_size: Sequence[int], padded: bool
) -> tuple[Triplet, Triplet]:
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
        if num_patches is not None and (
            isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches < 0
        ):
            raise VoxelflowValueError(
                f"num_patches must be a non-negative int or None, got {num_patches!r}"
            )
        self.subject = subject
        self.num_patches = num_patches
        self.seed = fresh_seed(seed)
        self.generator = make_generator(self.seed)
        self._iterations = 0
        self._tables = TableCache()
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
        first: Triplet,
        extent: Triplet,
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
        working = private_copy(subject, reads_whole)
        remaining = num_patches
        while remaining is None or remaining > 0:
            chunk = CHUNK if remaining is None else min(CHUNK, remaining)
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
        first: Triplet,
        extent: Triplet,
    ) -> np.ndarray:
        offsets = np.stack(
            [torch.randint(0, e, (count,), generator=generator).numpy() for e in extent], axis=1
        )
        return offsets + np.asarray(first)


def map_image(sampler: PatchSampler, subject: Subject, name: str | None, what: str) -> Image:
    """The image ``name`` of ``subject`` that ``sampler`` samples from (a clear error if absent)."""
    kind = type(sampler).__name__
    if name is None:
        raise VoxelflowValueError(f"{kind}: {what} name is missing")
    try:
        image = dict.__getitem__(subject, name)
    except KeyError:
        names = tuple(subject.images)
        raise VoxelflowKeyError(
            f"{subject_name(subject)}: {kind} needs the image {name!r} "
            f"({what}), but the subject has {', '.join(names) or 'no images'}."
            + did_you_mean(name, names)
        ) from None
    if not isinstance(image, Image):
        raise VoxelflowTypeError(
            f"{kind}: subject entry {name!r} must be an image, got {type(image).__name__}"
        )
    return image


__all__ = ["RandomSampler", "UniformSampler", "centre_bounds", "corners_from_centres", "map_image"]
