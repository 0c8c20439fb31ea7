"""What every patch sampler shares: patch sizes, validation, and reading a patch.

A sampler decides *where* patches go (:meth:`PatchSampler.sample_locations`);
:func:`extract_patch` reads them. Reading goes through each image's backend
(``image[...]`` on an unloaded image reads only the region) and always returns
copies, so a patch never keeps a whole volume alive. Patches that stick out of
the volume are padded on the fly, per patch, never by padding the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import Triplet, describe, shifted_affine, to_positive_triplet, to_triplet
from voxelflow._padding import PADDING_MODES, PaddingMode, pad_tensor, parse_padding_mode
from voxelflow.image import Image
from voxelflow.patches.location import PatchLocation
from voxelflow.subject import Subject

TypeTriplet = Triplet  # the name the patch modules use


def parse_patch_size(patch_size: int | Sequence[int]) -> TypeTriplet:
    """Validate a patch size: positive integers along I, J, K."""
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


def subject_name(subject: Subject) -> str:
    """A short name for error messages: the first image's path, or 'subject'."""
    for image in subject.images.values():
        if image.path is not None:
            return str(image.path)
    return "subject"


def read_patch(
    image: Image, location: PatchLocation, padding_mode: str | float | None = None
) -> Image:
    """Read ``location`` of ``image`` as a new in-memory image (a copy).

    Only the part of the box inside the image is read from the backend; the
    rest is padded with ``padding_mode`` (constant 0 when a mode is needed and
    ``None`` was given). The affine puts voxel 0 of the patch at
    ``location.index`` in the image's grid, padding included.
    """
    shape = image.spatial_shape
    ini, fin = location.index_ini, location.index_fin
    inside_ini = [max(0, i) for i in ini]
    inside_fin = [min(n, f) for n, f in zip(shape, fin, strict=True)]
    if any(a >= b for a, b in zip(inside_ini, inside_fin, strict=True)):
        raise VoxelflowValueError(
            f"{image.path or 'image'}: patch {location} lies entirely outside spatial shape {shape}"
        )
    slices = tuple(slice(a, b) for a, b in zip(inside_ini, inside_fin, strict=True))
    region = image[(slice(None), *slices)]
    data = region.data
    before = [a - i for a, i in zip(inside_ini, ini, strict=True)]
    after = [f - b for f, b in zip(fin, inside_fin, strict=True)]
    if any(before) or any(after):
        data = pad_tensor(data, before, after, padding_mode)
    return image.new_like(data, shifted_affine(image.affine, ini))


def extract_patch(
    subject: Subject, location: PatchLocation, padding_mode: str | float | None = None
) -> Subject:
    """A new subject holding ``location`` of every image (copies), with the
    subject's other entries and ``patch_location`` set to ``location``."""
    patch = subject.copy()
    for name, image in subject.images.items():
        dict.__setitem__(patch, name, read_patch(image, location, padding_mode))
    dict.__setitem__(patch, "patch_location", location)
    return patch


class PatchSampler:
    """Base class of samplers: a patch size and a way to place patches.

    Subclasses implement :meth:`sample_locations`; :meth:`extract` reads a patch.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.patches.sampler import PatchSampler
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


__all__ = [
    "PADDING_MODES",
    "PaddingMode",
    "PatchSampler",
    "TypeTriplet",
    "check_patch_fits",
    "describe",
    "extract_patch",
    "parse_padding_mode",
    "parse_patch_size",
    "read_patch",
    "subject_name",
    "to_triplet",
]
