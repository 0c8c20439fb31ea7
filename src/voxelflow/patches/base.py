"""``PatchSampler``: what every sampler shares (a patch size, padding, reading a patch).

A sampler decides *where* patches go (:meth:`PatchSampler.sample_locations`);
reading them is :mod:`voxelflow.patches.reading`'s job. Patch sizes are
validated here, once, for every sampler.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import Triplet, to_positive_triplet
from voxelflow._padding import parse_padding_mode
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.reading import extract_patch
from voxelflow.subject import Subject


def parse_patch_size(patch_size: int | Sequence[int]) -> Triplet:
    """Validate a patch size: positive integers along I, J, K (no floats, no booleans)."""
    return to_positive_triplet(patch_size, "patch_size")


def check_patch_fits(
    spatial_shape: Sequence[int], patch_size: Sequence[int], *, what: str = "subject"
) -> None:
    """Raise unless a patch fits inside ``spatial_shape`` along every axis."""
    if any(p > s for p, s in zip(patch_size, spatial_shape, strict=True)):
        shape = "×".join(map(str, spatial_shape))
        patch = "×".join(map(str, patch_size))
        raise VoxelflowValueError(
            f"{what}: patch {patch} does not fit in spatial shape {shape}; pass padding_mode= "
            "or a smaller patch_size"
        )


class PatchSampler:
    """Base class of samplers: a patch size and a way to place patches.

    Subclasses implement :meth:`sample_locations`; :meth:`extract` reads a patch.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.patches.base import PatchSampler
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 8, 8, 8)))
        >>> sampler = PatchSampler(patch_size=4)
        >>> patch = sampler.extract(subject, tio.PatchLocation((2, 2, 2), (4, 4, 4)))
        >>> tuple(patch.t1.shape), patch["patch_location"].index
        ((1, 4, 4, 4), (2, 2, 2))
    """

    def __init__(
        self, patch_size: int | Sequence[int], padding_mode: str | float | None = None
    ) -> None:
        self.patch_size = parse_patch_size(patch_size)
        self.padding_mode = parse_padding_mode(padding_mode)

    def sample_locations(
        self,
        subject: Subject,
        num_patches: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[PatchLocation]:
        """Where the patches of ``subject`` go (reads headers and sampling maps only)."""
        raise NotImplementedError

    def extract(self, subject: Subject, location: PatchLocation) -> Subject:
        """Read one patch of ``subject`` (copies; lazy images read only the region)."""
        return extract_patch(subject, location, self.padding_mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(patch_size={self.patch_size})"
